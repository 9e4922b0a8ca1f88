"""The model: loading, its blocks and linear layers, where it lives while it runs, saving."""
