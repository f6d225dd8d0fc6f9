"""Typed httpx client for the flex REST API; maps error bodies back to flex.errors."""
