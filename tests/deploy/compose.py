"""docker/compose.yaml, docker/Dockerfile and docker/nginx.conf as tests/deploy/test_compose.py reads them:
compose's `${NAME:-default}` interpolation, the Dockerfile's exec-form instructions, and each gateway
service as a local process runs it (what a container would be given, with the container's places mapped
onto the test's: the database, the secret, the volumes, the fixed addresses, the ports)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import REPO

DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
NGINX_CONF = DOCKER / "nginx.conf"
SECRETS = "/run/secrets/"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $$ is a dollar sign
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$\$")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation of `text` with `variables` (what the shell or docker/.env would give)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        value = variables.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise ValueError(f"{name}: {arg}")
        if op == ":-" and not value:
            return str(arg)
        if op == "-" and value is None:
            return str(arg)
        return value or ""

    return _VARIABLE.sub(one, text)


def load_compose(variables: Mapping[str, str]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE_FILE.read_text(encoding="utf-8"), variables))
    return loaded


@dataclass
class Dockerfile:
    """The instructions of a Dockerfile, continuation lines joined: (INSTRUCTION, arguments)."""

    instructions: list[tuple[str, str]]

    @classmethod
    def read(cls, path: Path = DOCKERFILE) -> Dockerfile:
        text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
        found = []
        for line in text.splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                name, _, rest = stripped.partition(" ")
                found.append((name.upper(), rest.strip()))
        return cls(found)

    def all(self, name: str) -> list[str]:
        return [rest for instruction, rest in self.instructions if instruction == name]

    def exec_form(self, name: str) -> list[str]:
        """The last `name` instruction's JSON array (exec form); ValueError for the shell form."""
        rest = self.all(name)[-1]
        if not rest.startswith("["):
            raise ValueError(f"{name} is in shell form: {rest}")
        argv: list[str] = json.loads(rest)
        return argv

    def healthcheck(self) -> list[str]:
        """The HEALTHCHECK's command, which must be `CMD [...]` (exec form)."""
        rest = self.all("HEALTHCHECK")[-1]
        command = rest[rest.index("CMD ") + len("CMD ") :].strip()
        if not command.startswith("["):
            raise ValueError(f"HEALTHCHECK is in shell form: {command}")
        argv: list[str] = json.loads(command)
        return argv


def proxy_headers(conf: Path = NGINX_CONF) -> dict[str, str]:
    """The `proxy_set_header` lines of the proxy's configuration: header name → nginx value."""
    pattern = re.compile(r"^\s*proxy_set_header\s+(\S+)\s+(\"[^\"]*\"|\S+);", re.MULTILINE)
    return {name: value.strip('"') for name, value in pattern.findall(conf.read_text(encoding="utf-8"))}


def fixed_addresses(compose: dict[str, Any]) -> set[str]:
    """Every `ipv4_address` a service has on a network: in a test, all are 127.0.0.1."""
    found = set()
    for service in compose["services"].values():
        networks = service.get("networks") or {}
        if isinstance(networks, dict):
            for settings in networks.values():
                if settings and "ipv4_address" in settings:
                    found.add(str(settings["ipv4_address"]))
    return found


@dataclass
class Local:
    """What the test gives in place of the containers' world."""

    bin_dir: Path
    database_url: str  # for DATABASE_URL's `db` host
    secrets: dict[str, Path]  # compose secret name → the file that stands for it
    volumes: dict[str, Path]  # named volume → a directory
    free_port: Callable[[], int]
    base: dict[str, str] = field(default_factory=dict)  # PATH, HOME, … (conftest.run_environment)


@dataclass
class Service:
    """A gateway service of compose.yaml as a local process: its argv and environment, and the ports the
    test gave it in place of the container's (container port → local port)."""

    name: str
    argv: list[str]
    environment: dict[str, str]
    ports: dict[int, int]

    def run_as(self, *arguments: str) -> list[str]:
        """The image's entrypoint with other arguments (`docker compose run SERVICE ARGUMENTS`)."""
        return [self.argv[0], *arguments]


def gateway_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from docker/Dockerfile."""
    built = {}
    for name, service in compose["services"].items():
        build = service.get("build")
        if isinstance(build, dict) and build.get("dockerfile") == "docker/Dockerfile":
            built[name] = service
    return built


def local_service(name: str, compose: dict[str, Any], dockerfile: Dockerfile, local: Local) -> Service:
    """`name` as a process of the installed wheel: the image's ENTRYPOINT with the service's command
    (else the image's CMD); its environment with `db` the local PostgreSQL, /run/secrets/NAME the secret's
    file, a volume's mount point its directory, a fixed address (or 0.0.0.0) 127.0.0.1, and every port a
    free one."""
    service = compose["services"][name]
    entrypoint = service.get("entrypoint") or dockerfile.exec_form("ENTRYPOINT")
    command = service.get("command") or dockerfile.exec_form("CMD")
    assert isinstance(command, list), f"{name}: the command in exec form (a list), not {command!r}"
    addresses = fixed_addresses(compose)
    ports: dict[int, int] = {}

    def port(value: str) -> str:
        ports[int(value)] = ports.get(int(value)) or local.free_port()
        return str(ports[int(value)])

    argv = [str(local.bin_dir / entrypoint[0]), *entrypoint[1:]]
    arguments = iter(command)
    for argument in arguments:
        argv.append(argument)
        if argument == "--port":
            argv.append(port(next(arguments)))
        elif argument == "--host":
            next(arguments)
            argv.append("127.0.0.1")
    mounts = {}
    for volume in service.get("volumes") or []:
        source, _, target = str(volume).partition(":")
        if source in local.volumes:
            mounts[target.split(":")[0]] = str(local.volumes[source])
    environment = dict(local.base)
    for key, raw in (service.get("environment") or {}).items():
        value = "" if raw is None else str(raw)
        if key == "DATABASE_URL":
            assert "@db:5432/" in value, value  # the `db` service
            value = local.database_url
        elif value.startswith(SECRETS):
            secret = value.removeprefix(SECRETS)
            assert secret in (service.get("secrets") or []), f"{name} does not have the secret {secret}"
            value = str(local.secrets[secret])
        elif value in mounts:
            value = mounts[value]
        elif key.endswith("_PORT") and value:
            value = port(value)
        else:  # a fixed address, or every interface: this host's loopback
            local_addresses = addresses | {"0.0.0.0"}
            value = ",".join("127.0.0.1" if item in local_addresses else item for item in value.split(","))
        environment[key] = value
    return Service(name, argv, environment, ports)
