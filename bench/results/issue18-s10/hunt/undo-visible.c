/* A register whose owner dies inside it: is its entry visible to a reader
 * before the core takes it back (the died_meanwhile undo)?  The fake
 * backend's on_call hook kills the owner inside the register slot and
 * reads the key first thing in the undo's unregister slot.  Not a test
 * (it asserts nothing): the evidence for NOTES.md.  Built with
 *   W=/work/wt/hunt; gcc -std=gnu11 -I$W/tests/core -I$W/include \
 *     $(pkg-config --cflags glib-2.0) undo-visible.c $W/tests/core/fake-backend.c \
 *     -L$W/build/core -lprocreg $(pkg-config --libs glib-2.0) -lpthread \
 *     -Wl,-rpath,$W/build/core -o undo-visible */
#include "fake-backend.h"
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct { pid_t pid; bool killed; procreg *reg; int seen_rc; procreg_owner seen; } ctx;

static void hook(FakeOp op, void *data)
{
    ctx *c = data;
    if (op == FAKE_OP_REGISTER && !c->killed) {
        c->killed = true;
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
    } else if (op == FAKE_OP_UNREGISTER && c->killed && c->seen_rc == 1) {
        /* the undo, first thing: what does a reader see now? */
        c->seen_rc = 2;
        c->seen_rc = procreg_lookup(c->reg, "ns", "free", &c->seen, NULL);
    }
}

int main(void)
{
    fake_backend_register_all();
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) { prctl(PR_SET_PDEATHSIG, SIGKILL); if (getppid() != parent) _exit(0); for (;;) pause(); }
    procreg *reg = NULL;
    if (procreg_open("fake_ts", &reg, NULL) != 0) return 2;
    FakeBackend *fb = fake_backend_last();
    ctx c = {.pid = pid, .reg = reg, .seen_rc = 1};
    procreg_owner o;
    procreg_owner_from_pid(pid, &o, NULL);
    fake_backend_set_on_call(fb, hook, &c);
    int rc = procreg_register(reg, "ns", "free", &o, NULL, NULL, NULL);
    fake_backend_set_on_call(fb, NULL, NULL);
    procreg_owner after;
    int rc2 = procreg_lookup(reg, "ns", "free", &after, NULL);
    printf("register for pid %d (killed inside the call): rc %d (%s)\n", (int)pid, rc, procreg_strerror(rc));
    printf("a lookup during the undo: rc %d, owner pid %d\n", c.seen_rc, c.seen_rc == 0 ? (int)c.seen.pid : 0);
    printf("a lookup after the register answered: rc %d\n", rc2);
    procreg_close(reg);
    return 0;
}
