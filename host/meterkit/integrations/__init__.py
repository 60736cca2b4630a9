"""Northbound integrations: what meterkit hands to other systems (Green Button for customers; MQTT / Home
Assistant), each in its own package, reading only what the store holds."""
