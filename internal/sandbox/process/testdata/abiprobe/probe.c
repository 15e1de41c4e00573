/*
 * abiprobe makes system calls through the entries a 64-bit x86 process can
 * reach besides its own: the i386 entry (int $0x80) and the x32 ABI (the
 * native entry with __X32_SYSCALL_BIT). A seccomp filter that checks only
 * x86-64 numbers lets these through. It prints each call's raw result
 * (a negative errno on failure) as "name=value" lines.
 *
 * Built by the tests with: gcc -static -nostdlib -O1 -o abiprobe probe.c
 * (no libc, so it needs nothing but gcc).
 */
typedef unsigned long u64;

static long sys64(long nr, long a, long b, long c) {
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return ret;
}

static long sys32(long nr, long a, long b, long c) {
	long ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
	return (int)ret;
}

static void put(const char *name, long v) {
	char buf[64];
	int n = 0;
	while (name[n]) { buf[n] = name[n]; n++; }
	buf[n++] = '=';
	if (v < 0) { buf[n++] = '-'; v = -v; }
	char digits[24];
	int d = 0;
	do { digits[d++] = '0' + v % 10; v /= 10; } while (v);
	while (d) buf[n++] = digits[--d];
	buf[n++] = '\n';
	sys64(1, 1, (long)buf, n); /* write(1, buf, n) */
}

#define CLONE_NEWUSER 0x10000000
#define X32_BIT 0x40000000

void _start(void) {
	put("getpid64", sys64(39, 0, 0, 0));
	put("getpid32", sys32(20, 0, 0, 0));                /* i386 getpid */
	put("unshare32", sys32(310, CLONE_NEWUSER, 0, 0)); /* i386 unshare */
	put("getpidx32", sys64(X32_BIT | 39, 0, 0, 0));    /* x32 getpid */
	put("unsharex32", sys64(X32_BIT | 272, CLONE_NEWUSER, 0, 0));
	sys64(60, 0, 0, 0); /* exit(0) */
	for (;;) {}
}
