"""Channel adapters: each turns a platform's events into ``InboundMessage`` and sends replies back.

Adapters are found through the ``chatlane.channels`` entry points; the core never imports them.
"""
