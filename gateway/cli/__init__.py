"""The actiongate command line: serve, validate, export, test, logs, import, mcp, replay, demo."""
