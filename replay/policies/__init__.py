"""The built-in dispatch policies, one module each."""
