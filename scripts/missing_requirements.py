"""Prints the pins of a requirements file that the running interpreter does not satisfy, space-separated (nothing
when all are satisfied). Offline and exact: it reads installed distributions' metadata, so it never downloads
anything and cannot be fooled by pip's output format. Only `name==version` pins and comments are accepted, which is
all requirements-dev.txt uses; anything else is an error that names the line."""
import importlib.metadata
import re
import sys

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.!+_-]+)$")


def pins(path):
    for n, raw in enumerate(open(path, encoding="utf-8"), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = PIN.match(line)
        if not m:
            sys.exit(f"{path}:{n}: '{line}' is not a 'name==version' pin; setup.sh only understands exact pins")
        yield m.group(1), m.group(2)


def satisfied(name, version):
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    # PEP 440: '==2.11.0' is matched by a local build '2.11.0+cpu'.
    return installed.split("+", 1)[0] == version.split("+", 1)[0]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "requirements-dev.txt"
    print(" ".join(f"{n}=={v}" for n, v in pins(path) if not satisfied(n, v)))


if __name__ == "__main__":
    main()
