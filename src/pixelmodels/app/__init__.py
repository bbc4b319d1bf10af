"""The application layer: the ``pixelmodels`` command and everything only it needs.

Parsing and the commands' settings, run directories, reading a user's files and folders, writing
outputs, heat maps and CSV, progress and reports. Imports run one way: this package uses the core
(``pixelmodels.*`` outside ``app``), and no core module imports it (``tests/test_structure.py``).
"""
