"""Event Service: event-range dispatch over the PanDA dispatcher protocol.

Layers (dependencies point one way):
``domain`` ← ``store`` ← ``dispatcher`` ← ``server``/``cli``;
``pilot`` ← ``client``, ``storage``, ``payload.channel``.
"""

__version__ = "0.1.0"
