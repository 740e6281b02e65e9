"""What the entry points share, below them: the pieces that join ``models``, ``datasets`` and ``utils``.

``train.py``, ``eval.py`` and ``scripts/`` import from here (and from the three packages below it)
and never from each other. ``utils`` stays the ground floor: it imports neither ``models`` nor
``datasets``; ``engine`` may import all three.
"""
