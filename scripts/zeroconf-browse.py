#!/usr/bin/env python3
"""Lists `_micro._tcp.local.` instances the way a standard DNS-SD client sees them.

Used by micro-registry's interop test: python-zeroconf, not micro's code, resolves
what micro announces. Usage: zeroconf-browse.py [seconds] [interface-ip]
Prints one line per resolved instance: `<instance> service=<name> address=<ip>:<port>`.
"""
import sys
import time

from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

SERVICE_TYPE = "_micro._tcp.local."


def main() -> int:
    wait = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    interface = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
    zc = Zeroconf(interfaces=[interface])
    found = {}

    def on_change(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added:
            found[name] = None

    ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
    deadline = time.time() + wait
    while time.time() < deadline:
        time.sleep(0.1)
    for name in sorted(found):
        info = zc.get_service_info(SERVICE_TYPE, name, timeout=2000)
        if info is None:
            continue
        props = {k.decode(): (v or b"").decode(errors="replace") for k, v in info.properties.items()}
        for address in info.parsed_addresses():
            print(f"{name} service={props.get('service', '')} address={address}:{info.port}")
    zc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
