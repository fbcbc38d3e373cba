"""The presets, as TOML files inside the package: `--config shakespeare` finds them wherever charrnn is installed.

configs/ at the top of the repository holds the same files, to read; a test keeps them identical.
"""
