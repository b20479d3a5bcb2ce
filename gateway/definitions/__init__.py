"""Action definitions: the models, sandboxed templates, config files and save-time rules."""
