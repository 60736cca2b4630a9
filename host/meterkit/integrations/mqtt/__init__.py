"""Northbound MQTT: Home Assistant's MQTT discovery, the meters' verified and stored values, and opt-in commands
from Home Assistant (docs/home-assistant.md).

    topics     topic names, discovery payloads and state payloads: pure functions, the one place they are made
    tracker    per meter, what has been published: newest frame first, totals never decrease (pure)
    link       the MQTT connection (paho-mqtt) on its own thread: retained state, will, resent on reconnect
    commands   Home Assistant's relay switch and shed button: checked, allowed, queued as signed commands
    bridge     the publisher the concentrator feeds after each commit; availability; the command handler
    config     MqttConfig: every setting, checked where it is made

May import: wire, store, headend, timefmt (and paho-mqtt). The head-end never imports this package: the
concentrator calls what is attached to it (Concentrator.add_northbound).
"""
