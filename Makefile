# Build and install qubes-storaged, its CLI and the system integration files.
#
#   make                      cargo build --release of qubes-storaged and qubes-storage
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
#
# `make install` builds first (a no-op when up to date); NO_BUILD=1 installs the
# binaries already in RELEASE_DIR without running cargo.
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

DAEMON := $(SBINDIR)/qubes-storaged
CLI := $(BINDIR)/qubes-storage
UNIT := $(SYSTEMD_UNIT_DIR)/qubes-storaged.service
ACTIVATION := $(DBUS_SERVICES_DIR)/org.qubes.Storage.service
BUS_POLICY := $(DBUS_POLICY_DIR)/org.qubes.Storage.conf
POLKIT_POLICY := $(POLKIT_ACTIONS_DIR)/org.qubes.storage.policy
INSTALLED := $(DAEMON) $(CLI) $(UNIT) $(ACTIVATION) $(BUS_POLICY) $(POLKIT_POLICY)

# Replaces the placeholders of the unit and the activation file.
SUBSTITUTE := sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@BINDIR@|$(BINDIR)|g'

.PHONY: all build install uninstall install-manifest install-check

all: build

build:
	$(CARGO) build --release $(CARGO_FLAGS) -p qubes-storaged -p qubes-storage-cli

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

# With a DESTDIR the stage is ours: also remove the directories left empty, up to
# DESTDIR. Without one, directories are shared with the system and stay.
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
ifneq ($(DESTDIR),)
	cd $(DESTDIR) && rmdir -p --ignore-fail-on-non-empty \
		$(sort $(patsubst /%,%,$(dir $(INSTALLED)))) 2>/dev/null || true
endif

install-manifest:
	@printf '%s\n' $(INSTALLED)

install-check:
	@test -n "$(DESTDIR)" || { echo "install-check needs DESTDIR=<stage>" >&2; exit 2; }
	@scripts/install-check $(DESTDIR) $(INSTALLED)
