"""The MCP gateway's pure core: JSON-RPC parsing, policies, the session table (adapter: addons/mcp.py)."""
