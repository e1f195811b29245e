"""Migration scripts, one per schema revision (a package only so that they ship in the wheel)."""
