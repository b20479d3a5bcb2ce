"""Definitions from other formats: OpenAPI operations become actions."""
