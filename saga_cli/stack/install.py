"""What the stack needs on the machine: a Java 17+, PostgreSQL's server binaries, and the Maven jars."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from saga_cli.stack.config import StackSettings
from saga_cli.stack.errors import StackError

TOOLS = {
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
}


def java_executable(settings: StackSettings) -> str:
    """The java to run: the first that exists of SAGA_JAVA_HOME's, JAVA_HOME's and the PATH's. StackError
    when SAGA_JAVA_HOME has no bin/java, that first one is older than Java 17, or there is none."""
    candidates = []
    if settings.java_home:
        if not (settings.java_home / "bin" / "java").exists():
            raise StackError(f"no bin/java in SAGA_JAVA_HOME={settings.java_home}")
        candidates.append(settings.java_home / "bin" / "java")
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    found = shutil.which("java")
    if found:
        candidates.append(Path(found))
    for java in candidates:
        if java.exists():
            version = _java_major(java)
            if version >= 17:
                return str(java)
            raise StackError(f"Java 17 or newer is needed, {java} is Java {version} (set SAGA_JAVA_HOME)")
    raise StackError("Java is missing: install a JDK 17+ (e.g. apt-get install openjdk-17-jre-headless) or set SAGA_JAVA_HOME")


def _java_major(java: Path) -> int:
    out = subprocess.run([str(java), "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def pg_bin_dir(settings: StackSettings) -> Path:
    """The folder of initdb and pg_ctl: SAGA_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin,
    else the PATH's; StackError when there is none (or SAGA_PG_BIN has no initdb)."""
    if settings.pg_bin:
        if (settings.pg_bin / "initdb").exists():
            return settings.pg_bin
        raise StackError(f"no initdb in SAGA_PG_BIN={settings.pg_bin}")
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise StackError("PostgreSQL server binaries are missing: `make deps` installs them (apt-get install postgresql-15), or set SAGA_PG_BIN")


def jars_fingerprint(settings: StackSettings) -> str:
    """16 hex digits of SHA-256 over every connect/**/pom.xml: names the jars resolved from them."""
    digest = hashlib.sha256()
    for pom in sorted(settings.connect_dir.glob("**/pom.xml")):
        digest.update(pom.read_bytes())
    return digest.hexdigest()[:16]


def ensure_jars(settings: StackSettings, say=print) -> None:
    """Resolve the pinned Kafka and Debezium jars with Maven, once per change of connect/**/pom.xml."""
    stamp = settings.home / "lib" / f".resolved-{jars_fingerprint(settings)}"
    if stamp.exists():
        return
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("Maven is missing: install it (apt-get install maven) to resolve the Kafka and Debezium jars")
    say("resolving Kafka and Debezium jars with Maven (first run only)…")
    for stale in (settings.lib_dir, settings.plugin_dir):
        shutil.rmtree(stale, ignore_errors=True)
    log = settings.log_dir / "maven.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        result = subprocess.run(
            [mvn, "-B", "-q", "-f", str(settings.connect_dir / "pom.xml"), "package", f"-Dsaga.home={settings.home}"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise StackError(f"Maven could not resolve the jars; see {log}")
    for old in stamp.parent.glob(".resolved-*"):
        old.unlink()
    stamp.touch()


def write_tool_scripts(settings: StackSettings, java: str) -> None:
    """Kafka's console tools from the same release as the broker, as scripts in <home>/bin."""
    settings.bin_dir.mkdir(parents=True, exist_ok=True)
    for name, main_class in TOOLS.items():
        script = settings.bin_dir / name
        script.write_text(
            "#!/bin/sh\n"
            f"# Kafka {name} from the stack's own Kafka release.\n"
            f'exec "{java}" -Xmx256m -XX:TieredStopAtLevel=1 -cp "{settings.lib_dir}/*" '
            f'-Dlog4j2.configurationFile="{settings.connect_dir / "log4j2.xml"}" '
            f'-Dsaga.log.file="{settings.log_dir / "tools.log"}" -Dsaga.log.level=WARN '
            f'{main_class} "$@"\n'
        )
        script.chmod(0o755)
