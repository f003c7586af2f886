"""The model card written beside each U-Net (MODEL_CARD.md): its fixed text is the Markdown
template `model_card.md` beside this module, with a `$name` wherever a value goes. What a
card says about the training data is read back by `trained_on_phantoms`."""

from __future__ import annotations

import re
from importlib import resources
from string import Template

TEMPLATE = "model_card.md"
FILE = "MODEL_CARD.md"  # the card's name in a model folder (evaluate writes it)
# The card's data line of a model trained on the embedded phantoms (`synthesize`, whose films'
# UIDs all start with formats.dicom.SYNTHETIC_UID_ROOT): evaluate fills the template's
# `${synthetic_note}` with "(synthetic) " when every film it saw had such a UID.
PHANTOM_DATA = re.compile(r"^- Data: SIIM-ACR \(synthetic\) ", re.MULTILINE)


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


def trained_on_phantoms(card: str) -> bool:
    """Whether the card `card` (MODEL_CARD.md's text) says its model was trained on the
    embedded phantoms rather than on films of patients."""
    return PHANTOM_DATA.search(card) is not None
