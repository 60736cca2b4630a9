# The meter's identity: its ES256 key pair, generated on the device, and the head-end's public key.
#
# The private key is created on first boot from the random source passed in (`urandom`: the hardware's
# true-random source, meter.hal.radio_random on an ESP32, which keeps the radio on for the draw; without one,
# os.urandom) and stays in the meter's flash; only the public key ever leaves the device. The device id (the
# COSE kid of every meter frame) is the first 8 bytes of SHA-256 over the uncompressed public key, so anyone
# holding the public key can check which id it belongs to. The head-end's public key (for verifying commands
# and acknowledgements) is installed at provisioning; its key id is derived the same way.
import hashlib

from meter import p256
from meter.store import Store


def key_id(pub65):
    return hashlib.sha256(pub65).digest()[:8]


class IdentityError(ValueError):
    pass


class Identity:
    def __init__(self, flash_dir, urandom=None):
        self._key_store = Store(flash_dir, "device-key", max_payload=64)
        self._he_store = Store(flash_dir, "headend-pub", max_payload=128)
        loaded = self._key_store.load()
        if loaded is None:
            d, pub = p256.generate_key(urandom)
            self._key_store.save(d)
            self.created = True
        else:
            d = loaded[1]
            pub = p256.public_key(d)  # raises ValueError if flash holds no valid key
            self.created = False
        self._d = d
        self.public_key = pub
        self.device_id = key_id(pub)
        he = self._he_store.load()
        self.headend_pub = he[1] if he is not None else None
        self.headend_id = key_id(self.headend_pub) if self.headend_pub else None

    def sign(self, payload):
        """COSE_Sign1 over payload bytes, kid = device id."""
        from meter import cose
        return cose.sign1(self._d, self.device_id, payload)

    def install_headend(self, pub65):
        """Install (or replace) the head-end public key. It must be a valid uncompressed P-256 point."""
        if p256.decode_point(pub65) is None:
            raise IdentityError("head-end key must be a 65-byte uncompressed P-256 public key on the curve")
        self._he_store.save(bytes(pub65))
        self.headend_pub = bytes(pub65)
        self.headend_id = key_id(self.headend_pub)

    def headend_lookup(self, kid):
        return self.headend_pub if self.headend_pub is not None and kid == self.headend_id else None
