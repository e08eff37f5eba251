#!/usr/bin/env bash
# Usage: scripts/jmeter-install.sh [-h|--help]
#
# Makes Apache JMeter 5.x available and prints the path of its launcher as the
# last line on stdout (all progress goes to stderr), so callers can do:
#   JMETER=$(scripts/jmeter-install.sh | tail -n 1)
#
# 1. A `jmeter` on PATH that reports a 5.x version is used as it is.
#    (Debian's jmeter package is 2.13 and does not run on Java 17: it is ignored.)
# 2. Otherwise JMeter 5.6.3 is assembled from its Maven Central artifacts into
#    ${CHATSYS_CACHE:-$HOME/.cache/chatsys}/jmeter-5.6.3 with a throwaway pom and
#    `mvn dependency:copy-dependencies`, laid out like the binary distribution:
#      bin/ApacheJMeter.jar   the launcher (org.apache.jmeter:ApacheJMeter)
#      bin/*.properties, log4j2.xml, report-template/, templates/
#                             unpacked from org.apache.jmeter:ApacheJMeter_config
#      lib/ext/ApacheJMeter_{core,http,components,functions}.jar
#      lib/                   jorphan and every third-party runtime dependency
#      bin/jmeter             a small launcher written by this script
#    A finished home carries a marker file and is reused as it is; a half-built
#    one is never visible (the home is built aside and moved into place).
#
# Needs: java (11 or later) and, for the first assembly only, mvn with access to
# Maven Central. Environment: CHATSYS_CACHE (cache root), JAVA_HOME (optional).
set -euo pipefail

JMETER_VERSION=5.6.3
# Bump when the layout produced below changes, so old homes are rebuilt.
RECIPE=2

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header comment
log() { echo "jmeter-install: $*" >&2; }
die() { log "error: $*"; exit 1; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

# --- 1. a JMeter 5.x already on PATH --------------------------------------------
if path_jmeter=$(command -v jmeter 2>/dev/null); then
  # Run it in a scratch directory: JMeter drops a jmeter.log in its working directory.
  scratch=$(mktemp -d)
  version_out=$(cd "$scratch" && timeout 120 "$path_jmeter" --version 2>/dev/null) || true
  rm -rf "$scratch"
  # The banner ends with the version, e.g. "... \_\ 5.6.3".
  path_version=$(printf '%s\n' "$version_out" \
    | grep -Eo '(^|[[:space:]])5\.[0-9]+(\.[0-9]+)?[[:space:]]*$' | head -n 1 | tr -d '[:space:]' || true)
  if [ -n "$path_version" ]; then
    log "using JMeter $path_version from PATH: $path_jmeter"
    echo "$path_jmeter"
    exit 0
  fi
  log "ignoring $path_jmeter: it does not report a working JMeter 5.x"
fi

# --- 2. the assembled home in the cache ---------------------------------------------
cache=${CHATSYS_CACHE:-${HOME:-/tmp}/.cache/chatsys}
home=$cache/jmeter-$JMETER_VERSION
marker=$home/.chatsys-assembled
launcher=$home/bin/jmeter

is_assembled() {
  [ -f "$marker" ] && grep -qx "recipe=$RECIPE" "$marker" && [ -x "$launcher" ] \
    && [ -f "$home/bin/ApacheJMeter.jar" ] && [ -d "$home/bin/report-template" ]
}

if is_assembled; then
  log "reusing $home"
  echo "$launcher"
  exit 0
fi

command -v java >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ] \
  || die "java not found (JMeter $JMETER_VERSION needs Java 11 or later)"
command -v mvn >/dev/null 2>&1 \
  || die "mvn not found: install Maven (apt-get install maven) or put a JMeter 5.x on PATH"

mkdir -p "$cache"
# Serialise concurrent installs; the second one finds the marker and stops.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.jmeter-$JMETER_VERSION.lock"
  flock 9
  if is_assembled; then
    log "reusing $home (assembled by a concurrent run)"
    echo "$launcher"
    exit 0
  fi
fi

started=$(date +%s)
work=$(mktemp -d "$cache/.jmeter-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "assembling JMeter $JMETER_VERSION from Maven Central into $home (takes a minute or two)"

# A throwaway pom whose runtime dependencies are exactly what JMeter needs.
modules="ApacheJMeter ApacheJMeter_core ApacheJMeter_http ApacheJMeter_components
         ApacheJMeter_functions ApacheJMeter_config jorphan"
{
  echo '<project xmlns="http://maven.apache.org/POM/4.0.0">'
  echo '  <modelVersion>4.0.0</modelVersion>'
  echo '  <groupId>local.chatsys</groupId><artifactId>jmeter-assembly</artifactId>'
  echo '  <version>1</version><packaging>pom</packaging>'
  echo '  <dependencies>'
  for m in $modules; do
    echo "    <dependency><groupId>org.apache.jmeter</groupId><artifactId>$m</artifactId><version>$JMETER_VERSION</version></dependency>"
  done
  echo '  </dependencies>'
  echo '</project>'
} > "$work/pom.xml"

if ! mvn -B -q -f "$work/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$work/jars" > "$work/mvn.log" 2>&1; then
  cat "$work/mvn.log" >&2
  die "mvn could not fetch the JMeter artifacts"
fi

new=$work/home
mkdir -p "$new/bin" "$new/lib/ext" "$new/lib/junit"

# bin/: configuration files and the HTML report templates come in the _config jar.
config_jar=$work/jars/ApacheJMeter_config-$JMETER_VERSION.jar
[ -f "$config_jar" ] || die "ApacheJMeter_config-$JMETER_VERSION.jar missing from the download"
mkdir -p "$work/config"
if command -v unzip >/dev/null 2>&1; then
  unzip -q "$config_jar" 'bin/*' -d "$work/config"
elif command -v jar >/dev/null 2>&1; then
  (cd "$work/config" && jar xf "$config_jar")
else
  python3 -m zipfile -e "$config_jar" "$work/config"
fi
cp -R "$work/config/bin/." "$new/bin/"
# log4j 2.22 warns on stderr, at every start, that the packages= lookup in
# JMeter's log4j2.xml is deprecated; keep its status logger to real errors.
sed -i 's/<Configuration status="WARN"/<Configuration status="ERROR"/' "$new/bin/log4j2.xml"

for jar in "$work"/jars/*.jar; do
  name=$(basename "$jar")
  case "$name" in
    ApacheJMeter-"$JMETER_VERSION".jar) cp "$jar" "$new/bin/ApacheJMeter.jar" ;;
    ApacheJMeter_config-*) ;;  # unpacked above
    ApacheJMeter_*-"$JMETER_VERSION".jar) cp "$jar" "$new/lib/ext/${name%-"$JMETER_VERSION".jar}.jar" ;;
    *) cp "$jar" "$new/lib/" ;;
  esac
done

for f in jmeter.properties saveservice.properties upgrade.properties system.properties \
         user.properties log4j2.xml reportgenerator.properties ApacheJMeter.jar; do
  [ -f "$new/bin/$f" ] || die "bin/$f missing from the assembled home"
done
[ -f "$new/bin/report-template/index.html.fmkr" ] || die "bin/report-template missing from the assembled home"
for m in core http components functions; do
  [ -f "$new/lib/ext/ApacheJMeter_$m.jar" ] || die "lib/ext/ApacheJMeter_$m.jar missing"
done

# The launcher. ApacheJMeter.jar takes its home from its own location (bin/..)
# and puts lib/*.jar and lib/ext/*.jar on the class path itself.
cat > "$new/bin/jmeter" <<'LAUNCHER'
#!/usr/bin/env bash
# Launcher for a JMeter home assembled by scripts/jmeter-install.sh.
# Environment: JAVA_HOME, HEAP (default -Xms256m -Xmx1g), JVM_ARGS (extra JVM options).
set -euo pipefail
bin_dir=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
java_cmd=java
if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then java_cmd=$JAVA_HOME/bin/java; fi
# JMeter reflects into these JDK packages (GUI look and feel, XStream plan saving).
opens=()
for pkg in java.base/java.lang java.base/java.lang.invoke java.base/java.lang.reflect \
           java.base/java.util java.base/java.text java.desktop/java.awt java.desktop/java.awt.font \
           java.desktop/javax.swing java.desktop/javax.swing.text.html java.desktop/sun.awt \
           java.desktop/sun.awt.X11 java.desktop/sun.awt.shell java.desktop/sun.swing; do
  opens+=("--add-opens=$pkg=ALL-UNNAMED")
done
# shellcheck disable=SC2086  # HEAP and JVM_ARGS are lists of options
exec "$java_cmd" ${HEAP:--Xms256m -Xmx1g} -XX:MaxMetaspaceSize=256m -XX:+UseG1GC \
  "${opens[@]}" -Djava.security.egd=file:/dev/urandom -Duser.language=en -Duser.region=EN \
  ${JVM_ARGS:-} -jar "$bin_dir/ApacheJMeter.jar" "$@"
LAUNCHER
chmod +x "$new/bin/jmeter"

# Check it before publishing it.
if ! (cd "$work" && "$new/bin/jmeter" --version) > "$work/version.out" 2>&1 \
    || ! grep -Eq "[[:space:]]${JMETER_VERSION}[[:space:]]*\$" "$work/version.out"; then
  cat "$work/version.out" >&2
  die "the assembled JMeter does not start"
fi

{
  echo "jmeter=$JMETER_VERSION"
  echo "recipe=$RECIPE"
  echo "assembled=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$new/.chatsys-assembled"

rm -rf "$home"
mv "$new" "$home"
log "assembled $home in $(( $(date +%s) - started ))s ($(du -sh "$home" | cut -f1))"
echo "$launcher"
