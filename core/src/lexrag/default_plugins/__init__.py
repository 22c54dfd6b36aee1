"""Plugins that ship with the core and register through the same hooks as any other."""
