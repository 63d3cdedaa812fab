# Build and install qubes-storaged, its CLI, its Cockpit page and the system
# integration files.
#
#   make                      cargo build --release of qubes-storaged and qubes-storage,
#                             and the Cockpit page (npm ci + esbuild in cockpit/)
#   make page                 only the Cockpit page, into cockpit/dist
#   make install              install into $(DESTDIR)$(PREFIX) (+ the fixed system dirs below)
#   make uninstall            remove exactly the files `make install` installs
#   make install-manifest     print the installed paths, one per line (without DESTDIR)
#   make install-check DESTDIR=/some/stage
#                             check that the stage holds exactly the manifest
#
# PREFIX defaults to /usr/local; packagers use PREFIX=/usr DESTDIR=<stage>.
# Two directories do not follow PREFIX, because their readers look in one place only:
#   - polkitd reads actions only from /usr/share/polkit-1/actions (POLKIT_ACTIONS_DIR);
#   - dbus-daemon reads bus policies only from /usr/share/dbus-1/system.d and
#     /etc/dbus-1/system.d (DBUS_POLICY_DIR).
# The unit and the activation file do follow PREFIX: systemd reads
# /usr/local/lib/systemd/system and dbus-daemon /usr/local/share/dbus-1/system-services.
# So does the Cockpit page: cockpit-bridge finds packages in every XDG data directory
# (/usr/local/share/cockpit and /usr/share/cockpit by default), next to Cockpit's own.
#
# `make install` builds first (a no-op when up to date); NO_BUILD=1 installs the
# binaries already in RELEASE_DIR and the page already in PAGE_DIR without running
# cargo or npm.
# After installing on a live system: systemctl daemon-reload; busctl call
# org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig.

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
DBUS_SERVICES_DIR ?= $(PREFIX)/share/dbus-1/system-services
DBUS_POLICY_DIR ?= /usr/share/dbus-1/system.d
POLKIT_ACTIONS_DIR ?= /usr/share/polkit-1/actions

CARGO ?= cargo
CARGO_FLAGS ?=
CARGO_TARGET_DIR ?= target
RELEASE_DIR ?= $(CARGO_TARGET_DIR)/release
NO_BUILD ?=
NPM ?= npm
PAGE_DIR ?= cockpit/dist
COCKPIT_DIR ?= $(PREFIX)/share/cockpit/qubes-storage

DAEMON := $(SBINDIR)/qubes-storaged
CLI := $(BINDIR)/qubes-storage
UNIT := $(SYSTEMD_UNIT_DIR)/qubes-storaged.service
ACTIVATION := $(DBUS_SERVICES_DIR)/org.qubes.Storage.service
BUS_POLICY := $(DBUS_POLICY_DIR)/org.qubes.Storage.conf
POLKIT_POLICY := $(POLKIT_ACTIONS_DIR)/org.qubes.storage.policy
# The Cockpit package: what cockpit/build.mjs writes to PAGE_DIR.
PAGE_FILES := manifest.json index.html index.js index.css
PAGE := $(addprefix $(COCKPIT_DIR)/,$(PAGE_FILES))
INSTALLED := $(DAEMON) $(CLI) $(UNIT) $(ACTIVATION) $(BUS_POLICY) $(POLKIT_POLICY) $(PAGE)

# Replaces the placeholders of the unit and the activation file.
SUBSTITUTE := sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@BINDIR@|$(BINDIR)|g'

.PHONY: all build binaries page install uninstall install-manifest install-check

all: build

build: binaries page

binaries:
	$(CARGO) build --release $(CARGO_FLAGS) -p qubes-storaged -p qubes-storage-cli

# npm ci installs exactly the lock file's versions; the build writes $(PAGE_DIR).
page:
	cd cockpit && $(NPM) ci --no-audit --no-fund --loglevel=error
	cd cockpit && node build.mjs

install: $(if $(NO_BUILD),,build)
	install -D -m 0755 $(RELEASE_DIR)/qubes-storaged $(DESTDIR)$(DAEMON)
	install -D -m 0755 $(RELEASE_DIR)/qubes-storage $(DESTDIR)$(CLI)
	install -d -m 0755 $(DESTDIR)$(SYSTEMD_UNIT_DIR) $(DESTDIR)$(DBUS_SERVICES_DIR)
	$(SUBSTITUTE) systemd/qubes-storaged.service > $(DESTDIR)$(UNIT)
	chmod 0644 $(DESTDIR)$(UNIT)
	$(SUBSTITUTE) systemd/org.qubes.Storage.service > $(DESTDIR)$(ACTIVATION)
	chmod 0644 $(DESTDIR)$(ACTIVATION)
	install -D -m 0644 systemd/org.qubes.Storage.conf $(DESTDIR)$(BUS_POLICY)
	install -D -m 0644 polkit/org.qubes.storage.policy $(DESTDIR)$(POLKIT_POLICY)
	install -d -m 0755 $(DESTDIR)$(COCKPIT_DIR)
	install -m 0644 $(addprefix $(PAGE_DIR)/,$(PAGE_FILES)) $(DESTDIR)$(COCKPIT_DIR)

# With a DESTDIR the stage is ours: also remove the directories left empty, up to
# DESTDIR. Without one, directories are shared with the system and stay — except the
# Cockpit package's own directory.
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
ifneq ($(DESTDIR),)
	cd $(DESTDIR) && rmdir -p --ignore-fail-on-non-empty \
		$(sort $(patsubst /%,%,$(dir $(INSTALLED)))) 2>/dev/null || true
else
	rmdir $(COCKPIT_DIR) 2>/dev/null || true
endif

install-manifest:
	@printf '%s\n' $(INSTALLED)

install-check:
	@test -n "$(DESTDIR)" || { echo "install-check needs DESTDIR=<stage>" >&2; exit 2; }
	@scripts/install-check $(DESTDIR) $(INSTALLED)
