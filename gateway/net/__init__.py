"""The wire: the egress guard, the outbound client for actions, the upstream LLM client, SSE."""
