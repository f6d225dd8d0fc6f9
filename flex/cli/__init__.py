"""The `flex` command line (typer). Talks to the API through flex.client only, except `flex runtime`,
`flex image` (which call flex.runtime) and `flex config` (which calls flex.devcontainer)."""
