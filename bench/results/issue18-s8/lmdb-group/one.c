/* temp driver: N threads (argv[2]) register K names (argv[1]) each on path argv[3] */
#include <procreg/procreg.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
static procreg *reg; static int K;
static gpointer run(gpointer d) {
  int id = GPOINTER_TO_INT(d); GError *e = NULL;
  for (int i = 0; i < K; i++) { char n[64]; g_snprintf(n, sizeof n, "r%d-%d", id, i);
    if (procreg_register(reg, "bench", n, NULL, NULL, NULL, &e) != 0) { fprintf(stderr, "%s\n", e->message); exit(1);} }
  return NULL; }
int main(int argc, char **argv) {
  K = atoi(argv[1]); int n = atoi(argv[2]);
  char *spec = g_strdup_printf("lmdb:path=%s", argv[3]); GError *e = NULL;
  if (procreg_open(spec, &reg, &e) != 0) { fprintf(stderr, "%s\n", e->message); return 1; }
  GThread *t[64]; for (int i = 0; i < n; i++) t[i] = g_thread_new("r", run, GINT_TO_POINTER(i));
  for (int i = 0; i < n; i++) g_thread_join(t[i]);
  procreg_close(reg); return 0; }
