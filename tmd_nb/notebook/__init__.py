"""The notebook layer: IPython magics, tab completion, displays and ipywidgets panels.

Thin adapters over :mod:`tmd_nb.formats`: they parse what the user typed or clicked, call the
format layer, and word its answers for a person.
"""
