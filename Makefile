# mixctl - a small pre-fork TCP load balancer.
#   make                 $(O)/mixctl, dynamically linked, -O2
#   make static          $(O)/mixctl, fully static and stripped, -Os unless CXXFLAGS is given
#   make static CXX=aarch64-linux-gnu-g++ O=build/aarch64     cross build: build/aarch64/mixctl
#   make test            unit and integration tests (Catch2)
#   make test-embedded   BusyBox chroot, OpenWrt init, systemd unit, install, aarch64 under qemu
#   make test-cross ARCH=aarch64|arm|mipsel     make test-busybox
#   make test-ha         two mixctl + keepalived (VRRP) nodes in network namespaces: failover
#                        after kill -9, SIGSTOP and link loss, reloads (root; ~1 min)
#   make install PREFIX=/usr DESTDIR=pkg
#   make chaos           tests/chaos.py: checked streams through mixctl while workers, upstreams,
#                        reloads, black holes and EMFILE strike at seeded random moments (~2.5 min;
#                        CHAOS_ARGS="--seed N" replays a run, --seconds sets the chaos phase)
#   make chaos-scale     tests/chaos.py --scale 10000: 10,000 concurrent checked connections
#                        through -w 2, with the daemon's memory and CPU (~1 min)
#   make bench           bench/run.py: mixctl against HAProxy, nginx stream and no proxy (~4 min)
#   make bench-poll      bench/poll_scale.py: mixctl's poll() against HAProxy's epoll, CPU per
#                        request with 10 to 10,000 idle connections (~2 min; BENCH_POLL_ARGS=-h)
#   make bench-udp       bench/udp.py: UDP relay against nginx stream, DNS-like and bulk (~1 min)
#   make bench-poll BENCH_POLL_ARGS="--workers 1,2,4,8 --wide 2"    the same at 10,000 idle
#                        connections with mixctl -w 1..8 on CPU 0, and -w 2 on CPUs 0,1 (~2.5 min)
# CXX, CXXFLAGS, LDFLAGS, PREFIX, DESTDIR and O (output folder, default .) are
# honoured. $(O)/.mixctl.flags records how $(O)/mixctl was built, so switching
# between `make` and `make static`, or changing CXX or the flags, rebuilds it.
VERSION  := 0.1.0
CXX      ?= g++
CXXFLAGS ?= -O2
LDFLAGS  ?=
PREFIX   ?= /usr/local
DESTDIR  ?=
MANDIR   ?= $(PREFIX)/share/man
O        ?= .
ARCH     ?= aarch64
WARN     := -std=c++17 -Wall -Wextra -Werror
DEFS     := -DMIXCTL_VERSION='"$(VERSION)"'
ifdef NO_SPLICE
DEFS     += -DMIXCTL_NO_SPLICE
endif
ifdef POSIX_ONLY
DEFS     += -DMIXCTL_POSIX_ONLY
endif
HEADERS  := $(wildcard *.hpp)
# The tests' own headers (harness.hpp, config_helpers.hpp): every test object
# depends on them.
TEST_HEADERS := $(wildcard tests/*.hpp)
CATCH    := /usr/include/catch2/catch.hpp
TESTS    := $(patsubst %.cpp,%.o,$(wildcard tests/*_test.cpp))
SLIM     := -ffunction-sections -fdata-sections -Wl,--gc-sections
# The static build also leaves out C++ exception support: mixctl catches
# none, so an exception (only the library throws one: std::bad_alloc when
# memory runs out) ends it through std::terminate with or without it. That
# drops the landing pads and the unwind tables of mixctl's own code, and
# MIXCTL_STATIC swaps libstdc++'s terminate handler, which links the C++
# demangler, for terminate.hpp's (same messages, type names not demangled).
NOEH     := -fno-exceptions -fno-asynchronous-unwind-tables -fno-unwind-tables -DMIXCTL_STATIC
# A static executable is not position-independent (-static links no PIE), so
# its code need not be either (Debian's compilers default to -fPIE); on MIPS,
# -mplt then calls functions directly instead of through the GOT.
NOPIE     = -fno-pie$(if $(findstring mips,$(shell $(CXX) -dumpmachine 2>/dev/null)), -mplt)
BIN      := $(O)/mixctl
# Some toolchains put atomics in libatomic (linked only where used).
ATOMIC   ?= -Wl,--as-needed -latomic
# The static build optimises for size, unless CXXFLAGS is given.
STATIC_OPT = $(if $(filter file,$(origin CXXFLAGS)),-Os,$(CXXFLAGS))
BUILD    = $(WARN) $(if $(STATIC),$(STATIC_OPT) $(SLIM) $(NOEH) $(NOPIE) -static -s,$(CXXFLAGS)) $(DEFS)

all: $(BIN)

$(BIN): mixctl.cpp $(HEADERS) $(O)/.mixctl.flags
	$(CXX) $(BUILD) -o $@ mixctl.cpp $(LDFLAGS) $(ATOMIC)

# Rewritten only when the compiler or the flags change (quotes dropped: it
# is a fingerprint, not a command).
$(O)/.mixctl.flags: FORCE
	@mkdir -p $(O)
	@printf '%s\n' '$(subst ',,$(CXX) $(BUILD) $(LDFLAGS) $(ATOMIC))' > $@.new; \
	if cmp -s $@.new $@; then rm -f $@.new; else mv -f $@.new $@; fi

static: STATIC := 1
static: $(BIN)

test: $(BIN) tests/unit
	MIXCTL=$(BIN) tests/unit $(TEST_ARGS)

tests/unit: tests/catch_main.o $(TESTS)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(LDFLAGS) -pthread

# Catch2's main takes ~15 s to compile: built once, kept across `make test`.
tests/catch_main.o: tests/catch_main.cpp | $(CATCH)
	$(CXX) -std=c++17 $(CXXFLAGS) -c -o $@ $<

tests/%.o: tests/%.cpp $(HEADERS) $(TEST_HEADERS) | $(CATCH)
	$(CXX) $(WARN) $(CXXFLAGS) $(DEFS) -I. -pthread -c -o $@ $<

$(CATCH):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Catch2 (Debian package catch2)"; \
	    apt-get update -qq && apt-get install -y -qq catch2; \
	else \
	    echo "Catch2 is missing: run  sudo apt-get install -y catch2  and then make test again"; exit 1; \
	fi

# Installs the mixctl that `make` or `make static` built last (running
# `make` first when there is none), with only what BusyBox install offers.
install:
	@test -f $(BIN) || $(MAKE) $(BIN)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(PREFIX)/share/mixctl
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/mixctl
	install -m 644 mixctl.8 $(DESTDIR)$(MANDIR)/man8/mixctl.8
	install -m 644 rules.example.yaml $(DESTDIR)$(PREFIX)/share/mixctl/rules.example.yaml

# The shell tests (tests/*.sh): each installs its Debian packages when run
# as root and skips, saying what is missing, otherwise.
test-embedded:
	tests/embedded.sh $(ARCH)

test-cross:
	tests/cross.sh $(ARCH)

test-busybox:
	tests/busybox.sh

test-openwrt:
	tests/openwrt_init.sh

test-install:
	tests/install.sh

test-systemd:
	tests/systemd_unit.sh

# Loopback only; every process it starts is stopped by pid.
chaos: $(BIN)
	MIXCTL=$(BIN) python3 tests/chaos.py $(CHAOS_ARGS)

chaos-scale: $(BIN)
	MIXCTL=$(BIN) python3 tests/chaos.py --scale $(or $(SCALE),10000)

test-ha: $(BIN)
	MIXCTL=$(BIN) tests/ha.sh

bench: mixctl
	python3 bench/run.py $(BENCH_ARGS)

bench-poll: mixctl
	python3 bench/poll_scale.py $(BENCH_POLL_ARGS)

bench-udp: mixctl
	python3 bench/udp.py $(BENCH_UDP_ARGS)

clean:
	rm -f $(BIN) $(O)/.mixctl.flags tests/unit tests/*.o
	rm -rf build

FORCE:

.PHONY: all static test install clean bench bench-poll bench-udp chaos chaos-scale FORCE test-embedded test-cross test-busybox test-openwrt \
	test-install test-systemd test-ha

# ---- fuzzing, sanitizers, valgrind (issue 5: "Proof") ----------------------
#   make fuzz [FUZZ_SECONDS=30]   libFuzzer over every tests/fuzz_NAME.cpp (today yaml_lite,
#                                 config validation, the control socket's commands, the TLS
#                                 ClientHello reader and the PROXY header reader):
#                                 each target runs FUZZ_SECONDS on a fresh copy of
#                                 tests/fuzz/corpus-TARGET if there is one, else
#                                 tests/fuzz/corpus, in build/fuzz (the tree is never
#                                 written); non-zero exit on any crash, leak, hang
#                                 or UB. Crash inputs land in build/fuzz/artifacts.
#   make sanitize                 mixctl and the tests with ASan+UBSan into build/sanitize
#                                 (the normal build is untouched), then runs them all
#                                 (SAN_EXCLUDE='~[soak]' leaves some out); fails on a
#                                 test failure or any sanitizer report from any process.
#   make valgrind                 tests/valgrind.sh: a short relay session under memcheck.
FUZZ_CXX     ?= clang++
FUZZ_SECONDS ?= 30
FUZZ_DIR     := build/fuzz
# Every tests/fuzz_NAME.cpp is a target (fuzz_*_test.cpp are ordinary tests
# replaying the regressions): a new parser of untrusted bytes adds its file.
FUZZ_TARGETS := $(filter-out %_test,$(patsubst tests/fuzz_%.cpp,%,$(wildcard tests/fuzz_*.cpp)))
FUZZ_FLAGS   := -std=c++17 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=all $(DEFS) -I.

$(FUZZ_DIR)/fuzz_%: tests/fuzz_%.cpp $(HEADERS) tests/fuzz_check.hpp
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -o $@ $<

fuzz-build: $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))

# Every target always runs; the exit status says whether any failed.
fuzz: fuzz-build
	@rc=0; for t in $(FUZZ_TARGETS); do \
	    rm -rf $(FUZZ_DIR)/corpus-$$t; mkdir -p $(FUZZ_DIR)/corpus-$$t $(FUZZ_DIR)/artifacts; \
	    if [ -d tests/fuzz/corpus-$$t ]; then cp tests/fuzz/corpus-$$t/* $(FUZZ_DIR)/corpus-$$t/; \
	    else cp tests/fuzz/corpus/* $(FUZZ_DIR)/corpus-$$t/; fi; \
	    echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	    if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	        $(FUZZ_DIR)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	        -max_len=8192 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- \
	        $(FUZZ_DIR)/corpus-$$t > $(FUZZ_DIR)/fuzz_$$t.log 2>&1; then \
	        rc=1; tail -n 60 $(FUZZ_DIR)/fuzz_$$t.log; echo "fuzz_$$t: FAILED (log: $(FUZZ_DIR)/fuzz_$$t.log)"; \
	    else \
	        grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^Done ' $(FUZZ_DIR)/fuzz_$$t.log; \
	        echo "fuzz_$$t: ok, corpus $$(ls $(FUZZ_DIR)/corpus-$$t | wc -l) files"; \
	    fi; \
	done; exit $$rc

.PHONY: fuzz fuzz-build

SAN_CXX     ?= $(CXX)
SAN_DIR     := build/sanitize
SAN_FLAGS   := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
# A Catch2 filter for tests to leave out under ASan (e.g. ~[soak]~[stress]);
# by default every test runs (the soak widens its RSS margin under ASan).
SAN_EXCLUDE ?=
# Every process (the test binary, each mixctl parent, worker and checker)
# writes its sanitizer report to its own file under $(SAN_DIR)/reports: a
# worker that dies of an ASan error is respawned and a test might not notice,
# the report file is what fails the run. Workers leave with _exit() (or are
# killed), so LeakSanitizer checks only processes that return from main().
SAN_REPORTS := $(CURDIR)/$(SAN_DIR)/reports
SAN_ENV     := ASAN_OPTIONS=detect_leaks=1:log_path=$(SAN_REPORTS)/asan \
               UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$(SAN_REPORTS)/ubsan \
               LSAN_OPTIONS=log_path=$(SAN_REPORTS)/lsan
SAN_TESTS   := $(patsubst tests/%.cpp,$(SAN_DIR)/tests/%.o,$(wildcard tests/*_test.cpp))

sanitize-bin:
	@$(MAKE) --no-print-directory O=$(SAN_DIR) CXX='$(SAN_CXX)' CXXFLAGS='$(SAN_FLAGS)' LDFLAGS='$(SAN_FLAGS)' all

$(SAN_DIR)/tests/catch_main.o: tests/catch_main.cpp | $(CATCH)
	@mkdir -p $(@D)
	$(SAN_CXX) -std=c++17 $(SAN_FLAGS) -c -o $@ $<

$(SAN_DIR)/tests/%.o: tests/%.cpp $(HEADERS) $(TEST_HEADERS) | $(CATCH)
	@mkdir -p $(@D)
	$(SAN_CXX) $(WARN) $(SAN_FLAGS) $(DEFS) -I. -pthread -c -o $@ $<

$(SAN_DIR)/unit: $(SAN_DIR)/tests/catch_main.o $(SAN_TESTS)
	$(SAN_CXX) $(SAN_FLAGS) -o $@ $^ -pthread

sanitize: sanitize-bin $(SAN_DIR)/unit
	@rm -rf $(SAN_REPORTS) && mkdir -p $(SAN_REPORTS)
	@rc=0; $(SAN_ENV) MIXCTL=$(SAN_DIR)/mixctl $(SAN_DIR)/unit $(if $(SAN_EXCLUDE),'$(SAN_EXCLUDE)') $(TEST_ARGS) || rc=$$?; \
	for f in $(SAN_REPORTS)/*; do \
	    [ -f "$$f" ] || continue; rc=1; echo "==== sanitizer report $$f"; head -n 80 "$$f"; \
	done; \
	[ $$rc = 0 ] && echo "sanitize: no sanitizer reports"; exit $$rc

.PHONY: sanitize sanitize-bin

# mixctl with -O1 -g (readable valgrind stacks) into build/valgrind, then the
# memcheck session.
VG_DIR := build/valgrind
valgrind:
	@$(MAKE) --no-print-directory O=$(VG_DIR) CXXFLAGS='-O1 -g' all
	MIXCTL=$(CURDIR)/$(VG_DIR)/mixctl tests/valgrind.sh

.PHONY: valgrind
