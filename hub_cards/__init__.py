"""Card templates (model, dataset), installed with the package as `modeling_spa.card_templates` so that a wheel
install renders them too (read with importlib.resources)."""
