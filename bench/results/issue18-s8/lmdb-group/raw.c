#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) { int K = atoi(argv[1]); MDB_env *env; MDB_txn *txn; MDB_dbi dbi;
 mdb_env_create(&env); mdb_env_set_mapsize(env, 64<<20); if (mdb_env_open(env, argv[2], MDB_NOSUBDIR, 0600)) return 1;
 mdb_txn_begin(env, NULL, 0, &txn); mdb_dbi_open(txn, NULL, 0, &dbi); mdb_txn_commit(txn);
 for (long i = 0; i < K; i++) { char n[64]; int l = snprintf(n, sizeof n, "r0-%ld", i); MDB_val k = {l, n}, v = {8, &i};
  mdb_txn_begin(env, NULL, 0, &txn); mdb_put(txn, dbi, &k, &v, MDB_NOOVERWRITE); if (mdb_txn_commit(txn)) return 2; }
 mdb_env_close(env); return 0; }
