"""Resolve Java artifacts from Maven Central with `mvn`, into a cache directory."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from nrtrec.deploy.errors import InstallFailed

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>nrtrec.local</groupId>
  <artifactId>resolve</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""

_DEPENDENCY = """    <dependency>
      <groupId>{group}</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{version}</version>
    </dependency>"""


def resolve(coordinates: list[str], dest: Path, transitive: bool = True) -> list[Path]:
    """Copy the jars of ``group:artifact:version`` coordinates (and their runtime dependencies
    when ``transitive``) into ``dest``; a second call with the same coordinates does nothing."""
    marker = dest / ".resolved"
    digest = hashlib.sha256(f"{transitive}|{'|'.join(sorted(coordinates))}".encode()).hexdigest()
    if marker.exists() and marker.read_text() == digest:
        return sorted(dest.glob("*.jar"))
    if shutil.which("mvn") is None:
        raise InstallFailed("`mvn` (Apache Maven) is not on PATH; the README's set-up installs it")
    deps = []
    for c in coordinates:
        group, artifact, version = c.split(":")
        deps.append(_DEPENDENCY.format(group=group, artifact=artifact, version=version))
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_POM.format(dependencies="\n".join(deps)))
        cmd = [
            "mvn", "-B", "-q", "-f", str(pom),
            "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
            f"-DoutputDirectory={dest}",
            "-DincludeScope=runtime",
            f"-DexcludeTransitive={'false' if transitive else 'true'}",
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise InstallFailed(
            f"mvn could not resolve {', '.join(coordinates)}:\n{result.stdout[-3000:]}"
            f"{result.stderr[-2000:]}"
        )
    marker.write_text(digest)
    return sorted(dest.glob("*.jar"))
