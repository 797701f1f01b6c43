#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) { int K = atoi(argv[1]), M = atoi(argv[2]); MDB_env *env; MDB_txn *txn; MDB_dbi dbi[32];
 mdb_env_create(&env); mdb_env_set_maxdbs(env, 40); mdb_env_set_mapsize(env, 64<<20); if (mdb_env_open(env, argv[3], MDB_NOSUBDIR, 0600)) return 1;
 mdb_txn_begin(env, NULL, 0, &txn); for (int d = 0; d < M; d++) { char n[16]; snprintf(n, 16, "d%d", d); mdb_dbi_open(txn, n, MDB_CREATE, &dbi[d]); } mdb_txn_commit(txn);
 struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
 for (long i = 0; i < K; i++) { char n[64]; int l = snprintf(n, sizeof n, "r0-%ld", i); MDB_val k = {l, n}, v = {8, &i};
  mdb_txn_begin(env, NULL, 0, &txn); for (int d = 0; d < M; d++) mdb_put(txn, dbi[d], &k, &v, 0); if (mdb_txn_commit(txn)) return 2; }
 clock_gettime(CLOCK_MONOTONIC, &b); printf("M=%d %.0f us/txn\n", M, ((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/1e3/K);
 mdb_env_close(env); return 0; }
