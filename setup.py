"""Install with ``pip install .`` (extras: ``[postgres]``, ``[test]``, ``[bench]``)."""
from setuptools import find_packages, setup

setup(
    name="qun-homeserver",
    version="0.1.0",
    description="A fast, simple Matrix homeserver library for WeChat-style group chat, built on Twisted",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["homeserver", "homeserver.*", "federation", "federation.*",
                                    "appservice", "appservice.*"]),
    package_data={"homeserver": ["default_config.yaml", "storage/schema/*.sql"]},
    install_requires=[
        "twisted>=23.10",
        "treq>=23.11",
        "autobahn>=23.6",
        "canonicaljson>=2.0",
        "signedjson>=1.1.4",
        "pynacl>=1.5",
        "unpaddedbase64>=2.1",
        "pyyaml>=6.0",
        "bcrypt>=4.0",
        "prometheus-client>=0.17",
        # federation: TLS listener and client, self-signed certificates for tests
        "cryptography>=41.0",
        "pyopenssl>=23.2",
        "service-identity>=23.1",
        "qrcode>=7.4",
        "Pillow>=10.0",
    ],
    extras_require={
        # psycopg2-binary ships the psycopg2 module prebuilt: no libpq headers or compiler needed.
        "postgres": ["psycopg2-binary>=2.9.6"],
        "test": [
            "pytest>=7.4",
            "pytest-twisted>=1.14",
            "hypothesis>=6.80",
            "matrix-nio>=0.24",
            "jsonschema>=4.19",
            "mautrix>=0.20",
        ],
        # bench/: the lean receivers of realtime_bench.py parse with orjson on uvloop when they can.
        "bench": ["aiohttp>=3.8", "orjson>=3.9", "uvloop>=0.19"],
    },
    entry_points={
        "console_scripts": [
            "homeserver=homeserver.cli:main",
            "register_new_user=homeserver.api.admin.register_new_user:main",
        ],
    },
)
