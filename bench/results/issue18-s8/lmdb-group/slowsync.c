/* temp: LD_PRELOAD model of a disk whose flush takes FLUSH_US (default 165) us,
 * one flush at a time (a process-shared mutex in /dev/shm), no CPU spent. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include <stdatomic.h>
static char dsync[4096];
static pthread_mutex_t *dev;
static long us = 165;
static atomic_long *nflush;
__attribute__((constructor)) static void init(void) {
  prctl(PR_SET_TIMERSLACK, 1UL);
  if (getenv("FLUSH_US")) us = atol(getenv("FLUSH_US"));
  int fd = open("/dev/shm/lg-slowsync-dev", O_RDWR | O_CREAT, 0600);
  ftruncate(fd, 4096);
  char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  dev = (pthread_mutex_t *)p; nflush = (atomic_long *)(p + 256);
  if (p[1024] == 0) { pthread_mutexattr_t a; pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED); pthread_mutex_init(dev, &a); p[1024] = 1; }
}
static void flush(void) {
  struct timespec t = {0, us * 1000};
  pthread_mutex_lock(dev); atomic_fetch_add(nflush, 1);
  clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL);
  pthread_mutex_unlock(dev);
}
int open(const char *path, int flags, ...) {
  static int (*real)(const char *, int, ...);
  if (!real) real = dlsym(RTLD_NEXT, "open");
  va_list ap; va_start(ap, flags); int mode = va_arg(ap, int); va_end(ap);
  int fd = real(path, flags, mode);
  if (fd >= 0 && fd < 4096) dsync[fd] = (flags & O_DSYNC) != 0;
  return fd;
}
int open64(const char *path, int flags, ...) {
  va_list ap; va_start(ap, flags); int mode = va_arg(ap, int); va_end(ap);
  return open(path, flags, mode);
}
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) {
  static ssize_t (*real)(int, const void *, size_t, off_t);
  if (!real) real = dlsym(RTLD_NEXT, "pwrite");
  ssize_t r = real(fd, b, n, o);
  if (fd >= 0 && fd < 4096 && dsync[fd]) flush();
  return r;
}
ssize_t pwrite64(int fd, const void *b, size_t n, off_t o) { return pwrite(fd, b, n, o); }
int fdatasync(int fd) { flush(); (void)fd; return 0; }
int fsync(int fd) { flush(); (void)fd; return 0; }
