"""The built-in dispatch policies (DESIGN §5), one module each."""
