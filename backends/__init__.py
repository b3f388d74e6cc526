"""Backend adapters: one module per implementation, each importing its library lazily."""
