"""The model card written beside each U-Net (MODEL_CARD.md): its fixed text is the Markdown
template `model_card.md` beside this module, with a `$name` wherever a value goes."""

from __future__ import annotations

from importlib import resources
from string import Template

TEMPLATE = "model_card.md"


def template() -> Template:
    """`model_card.md`, installed with the package (pyproject.toml's package-data)."""
    return Template(resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8"))


def render(**fields: object) -> str:
    """The card with each `$name` replaced by `fields[name]`, formatted as an f-string would
    (`format(value)`). Every name in the template must be given, and no other."""
    card = template()
    names = set(card.get_identifiers())
    missing, unknown = sorted(names - fields.keys()), sorted(fields.keys() - names)
    if missing or unknown:
        raise ValueError(f"{TEMPLATE}: fields missing {missing}, fields not in the template {unknown}")
    return card.substitute({name: format(value) for name, value in fields.items()})
