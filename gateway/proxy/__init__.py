"""The OpenAI-compatible proxy: one turn, the tool loop, and forms, buttons and confirmations."""
