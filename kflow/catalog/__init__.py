"""The recipes shipped with kflow, one per module (registered by importing them).

`kflow recipes` lists them; `kflow.recipe.registry.BUILTIN_MODULES` names them.
"""
