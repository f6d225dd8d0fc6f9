#!/bin/sh
# Runs once, when the container is created (postCreateCommand), in the workspace folder.
echo "$GREETING: $(. /etc/os-release && echo "$PRETTY_NAME"), workspace $(pwd)" > /tmp/welcome
cat /tmp/welcome
