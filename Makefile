# dvmm - top-level build. `make` builds build/dvmm and the test guest;
# `make test`, `make demo`, `make bench` install what they need first.
CC := gcc
BUILD := build
WARN := -Wall -Wextra -Werror
BASE_CFLAGS := -std=gnu11 $(WARN) -D_GNU_SOURCE -Isrc -g -MMD -MP
CFLAGS := -O2 $(BASE_CFLAGS)
SAN_CFLAGS := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined $(BASE_CFLAGS)
LDLIBS := -ljansson -luring -lsodium -lpthread
TEST_LDLIBS := -lcmocka $(LDLIBS)

MAIN_SRC := src/main.c
LIB_SRC := $(sort $(wildcard src/*/*.c))
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
SAN_LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/asan/obj/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
SAN_UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/asan/tests/%)

GUEST := $(BUILD)/guest/testguest.elf
TOOLS := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(wildcard tests/tools/*.c))

.PHONY: all deps deps-test guest test unit tools demo bench clean format \
	linux-guest
# Keep object files (no "rm ..." after the test summary line).
.SECONDARY:

all: deps $(BUILD)/dvmm guest

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/asan/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -c $< -o $@

$(BUILD)/libdvmm.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/asan/libdvmm.a: $(SAN_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/dvmm: $(BUILD)/obj/src/main.o $(BUILD)/libdvmm.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/asan/dvmm: $(BUILD)/asan/obj/src/main.o $(BUILD)/asan/libdvmm.a
	$(CC) $(SAN_CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libdvmm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(TEST_LDLIBS)

$(BUILD)/asan/tests/%: $(BUILD)/asan/obj/tests/unit/%.o $(BUILD)/asan/libdvmm.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -o $@ $^ $(TEST_LDLIBS)

guest:
	@$(MAKE) --no-print-directory -C guest BUILD=$(abspath $(BUILD))/guest

unit: $(UNIT_BIN) $(SAN_UNIT_BIN)

# Tools that use the library (the generic rule below links none).
$(BUILD)/tools/cluster_ping: tests/tools/cluster_ping.c $(BUILD)/libdvmm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# The DSM tools (one .c each, plus tests/tools/dsm_tool.h); the stress
# test also under ASan/UBSan.
DSM_TOOLS := $(BUILD)/tools/dsm_stress $(BUILD)/tools/dsm_bench
$(DSM_TOOLS): $(BUILD)/tools/%: tests/tools/%.c tests/tools/dsm_tool.h \
		$(BUILD)/libdvmm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libdvmm.a $(LDLIBS)

$(BUILD)/asan/tools/dsm_stress: tests/tools/dsm_stress.c \
		tests/tools/dsm_tool.h $(BUILD)/asan/libdvmm.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -o $@ $< $(BUILD)/asan/libdvmm.a $(LDLIBS)

# The migration state check on real KVM, also under ASan/UBSan.
$(BUILD)/tools/vmstate_selftest: tests/tools/vmstate_selftest.c \
		$(BUILD)/libdvmm.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libdvmm.a $(LDLIBS)

$(BUILD)/asan/tools/vmstate_selftest: tests/tools/vmstate_selftest.c \
		$(BUILD)/asan/libdvmm.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -o $@ $< $(BUILD)/asan/libdvmm.a $(LDLIBS)

$(BUILD)/tools/%: tests/tools/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $<

tools: $(TOOLS) $(BUILD)/asan/tools/dsm_stress \
	$(BUILD)/asan/tools/vmstate_selftest

# Debian's cloud kernel and a busybox initramfs in build/linux/.
linux-guest: deps-test
	@scripts/linux-guest.sh $(abspath $(BUILD))/linux

test: deps-test all $(BUILD)/asan/dvmm unit tools linux-guest
	@tests/run_all.sh

demo: deps all
	@scripts/demo.sh

bench: deps-test all tools
	@bench/run.sh

format:
	clang-format -i $(LIB_SRC) $(MAIN_SRC) $(wildcard src/*/*.h) $(UNIT_SRC) $(wildcard tests/tools/*.[ch])

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
