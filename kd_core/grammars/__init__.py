"""Built-in prompt grammars (YAML data)."""
