# mixctl - a small pre-fork TCP load balancer. `make`, `make test`, `make static`,
# `make install PREFIX=/usr DESTDIR=pkg`. CXX, CXXFLAGS and LDFLAGS are yours to
# override (cross builds: make static CXX=aarch64-linux-gnu-g++).
VERSION  := 0.1.0
CXX      ?= g++
CXXFLAGS ?= -O2
LDFLAGS  ?=
PREFIX   ?= /usr/local
DESTDIR  ?=
WARN     := -std=c++17 -Wall -Wextra -Werror
DEFS     := -DMIXCTL_VERSION='"$(VERSION)"'
ifdef POSIX_ONLY
DEFS     += -DMIXCTL_POSIX_ONLY
endif
HEADERS  := $(wildcard *.hpp)
CATCH    := /usr/include/catch2/catch.hpp
TESTS    := $(patsubst %.cpp,%.o,$(wildcard tests/*_test.cpp))
SLIM     := -ffunction-sections -fdata-sections -Wl,--gc-sections

mixctl: mixctl.cpp $(HEADERS)
	$(CXX) $(WARN) $(CXXFLAGS) $(DEFS) -o $@ mixctl.cpp $(LDFLAGS)

static: mixctl.cpp $(HEADERS)
	$(CXX) $(WARN) $(CXXFLAGS) $(DEFS) $(SLIM) -static -s -o mixctl mixctl.cpp $(LDFLAGS)

test: mixctl tests/unit
	tests/unit $(TEST_ARGS)

tests/unit: tests/catch_main.o $(TESTS)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(LDFLAGS) -pthread

# Catch2's main takes ~15 s to compile: built once, kept across `make test`.
tests/catch_main.o: tests/catch_main.cpp | $(CATCH)
	$(CXX) -std=c++17 $(CXXFLAGS) -c -o $@ $<

tests/%.o: tests/%.cpp $(HEADERS) tests/harness.hpp | $(CATCH)
	$(CXX) $(WARN) $(CXXFLAGS) $(DEFS) -I. -pthread -c -o $@ $<

$(CATCH):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Catch2 (Debian package catch2)"; \
	    apt-get update -qq && apt-get install -y -qq catch2; \
	else \
	    echo "Catch2 is missing: run  sudo apt-get install -y catch2  and then make test again"; exit 1; \
	fi

install: mixctl
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/mixctl
	install -m 755 mixctl $(DESTDIR)$(PREFIX)/bin/mixctl
	install -m 644 rules.example.yaml $(DESTDIR)$(PREFIX)/share/mixctl/rules.example.yaml

clean:
	rm -f mixctl tests/unit tests/*.o

.PHONY: static test install clean
