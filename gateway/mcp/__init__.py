"""The MCP server: the agent's actions as MCP tools over stdio and streamable HTTP."""
