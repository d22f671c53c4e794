"""A private certificate authority for tests, made with openssl.

make_ca() makes a self-signed CA; make_cert() a key and a certificate it
signs, for one or more DNS names (subjectAltName), EC P-256 by default.
"""

import os
import subprocess


def openssl(*args, cwd=None):
    subprocess.run(["openssl", *args], check=True, cwd=cwd, capture_output=True)


def make_ca(d: str, name: str = "ca", cn: str = "forestgate test CA") -> str:
    """d/name.key and d/name.crt; returns the path without extension."""
    os.makedirs(d, exist_ok=True)
    ca = os.path.join(d, name)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "30", "-subj", f"/CN={cn}", "-keyout", ca + ".key", "-out", ca + ".crt")
    return ca


def make_cert(d: str, ca: str, name: str, rsa: bool = False, days: int = 30,
              alt_names: list[str] | None = None) -> tuple[str, str]:
    """A key and a CA-signed certificate for name (and alt_names), as
    d/name.key and d/name.crt. Returns (crt, key)."""
    key, csr, crt = (os.path.join(d, f"{name}.{x}") for x in ("key", "csr", "crt"))
    if rsa:
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key)
    else:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
    ext = os.path.join(d, f"{name}.ext")
    sans = ", ".join(f"DNS:{n}" for n in [name] + list(alt_names or []))
    with open(ext, "w") as f:
        f.write(f"subjectAltName={sans}\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca + ".crt", "-CAkey", ca + ".key",
            "-CAcreateserial", "-days", str(days), "-extfile", ext, "-out", crt)
    os.unlink(csr)
    os.unlink(ext)
    return crt, key
