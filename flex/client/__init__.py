"""Typed httpx client for the flex REST API; maps problem+json answers back to flex.errors classes."""

from flex.client.calls import error_from_response
from flex.client.client import AsyncFlexClient, FlexClient

__all__ = ["AsyncFlexClient", "FlexClient", "error_from_response"]
