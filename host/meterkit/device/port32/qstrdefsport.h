// qstrs of the mp32 port: found in its sources by the core's qstr scan; nothing to add by hand.
