/* sept_twin.pml: the Promela twin of bench/twin/twin_model.py (S-EPT page free lifecycle).
 *
 * Same variables, same atomic steps: one atomic{} per septlab step (one yield of a task generator),
 * its first statement the step's guard (pc, plus the OP_WAIT predicate). Each task's program counter
 * is an explicit local `pc` and every proctype is one do-loop of guarded atomic blocks, so control
 * never rests anywhere but at the loop head: Promela adds no states of its own (no process creation
 * or death transitions, no control-flow statements outside atomic blocks). The scratch globals k, q
 * are used only inside one block and reset to 0 at its end, so they never tell two states apart:
 * they are the "_"-prefixed Python locals that septlab's canonical state skips.
 *
 * Parameters (spin -DNAME=...; bench/twin/twin_model.py TwinConfig.defines() gives the same set):
 *   N pages = mirror slots, V vCPUs, W walkers, MAXF injectable RECLAIM failures, RCU_FREE (else tdx-free)
 * Mutants: BUG_FREE_BEFORE_RECLAIM, BUG_RECLAIM_HKID_ASSIGNED, BUG_NO_GRACE_PERIOD, BUG_FREE_AFTER_FAILED_RECLAIM
 * Invariants are asserts: free-while-tdx-owned, seamcall-unexpected-error, rcu-use-after-free, leak-at-destroy.
 */

#ifndef N
#define N 2
#endif
#ifndef V
#define V 2
#endif
#ifndef W
#define W 1
#endif
#ifndef MAXF
#define MAXF 1
#endif

/* owner[] */
#define FREE 0
#define CACHED 1
#define ATTACHED 2
#define TDX_OWNED 3
#define RECLAIMED 4
#define FREED 5
#define LEAKED 6
/* pamt[] */
#define NDA 0
#define EPT 1
/* mirror[] */
#define EMPTY 0
#define FROZEN 1
#define PRESENT 2
/* rd[] */
#define OUT 0
#define NEW 1
#define OLD 2
#define NONE 255

/* teardown pcs */
#define T_WAIT 0
#define T_ZAP 1
#define T_RECLAIM 2
#define T_FREE 3
#define T_CALL_RCU 4
#define T_FREE_EARLY 5
#define T_RELEASE 6
#define T_BARRIER 7
#define T_DONE 8

#ifdef BUG_RECLAIM_HKID_ASSIGNED
#define AFTER_LOOP T_RELEASE
#else
#define AFTER_LOOP T_BARRIER
#endif
#ifdef BUG_FREE_BEFORE_RECLAIM
#define AFTER_ZAP T_FREE_EARLY
#else
#define AFTER_ZAP T_RECLAIM
#endif
#if defined(RCU_FREE) || defined(BUG_FREE_BEFORE_RECLAIM)
#define AFTER_RECLAIM T_CALL_RCU
#else
#define AFTER_RECLAIM T_FREE
#endif
#ifdef RCU_FREE
#define RCU_FREE_ON 1
#else
#define RCU_FREE_ON 0
#endif

byte owner[N];           /* FREE initially */
byte pamt[N];            /* NDA */
bit spfree[N];
byte mirror[N];          /* EMPTY */
byte link[N] = NONE;
bit hkid = 1;
byte vrun = V;
byte cbq[N] = NONE;      /* FIFO of pages; slots >= cbn are NONE */
byte cbage[N];           /* grace periods since call_rcu, capped at 2; 0 beyond cbn */
byte cbn;
byte rd[W];              /* OUT */
byte nold;
byte nfaults;
byte k;                  /* scratch: loop index / injected-error flag inside one atomic block, */
byte q;                  /* always 0 between blocks (not `hidden`: -DBFS refuses hidden variables) */

inline free_ext(pg) {    /* tdx_free_control_page(): free-while-tdx-owned */
  assert(pamt[pg] == NDA);
  owner[pg] = FREED
}

inline free_sp(pg) {     /* tdp_mmu_free_sp(); rcu-free frees the S-EPT page with the sp */
  spfree[pg] = 1;
  if
  :: RCU_FREE_ON && owner[pg] == RECLAIMED -> free_ext(pg)
  :: else -> skip
  fi
}

active [V] proctype vcpu() {
  byte pc = 0;
  byte s = _pid % N;
  byte p = NONE;
end:
  do
  :: atomic { pc == 0 ->                         /* ALLOC: lowest FREE page */
       k = 0;
       do
       :: k < N && owner[k] != FREE -> k++
       :: else -> break
       od;
       if
       :: k < N -> p = k; owner[p] = CACHED; pc = 1
       :: else -> vrun--; pc = 4
       fi;
       k = 0 }
  :: atomic { pc == 1 ->                         /* FREEZE */
       if
       :: mirror[s] != EMPTY -> owner[p] = FREE; p = NONE; vrun--; pc = 4   /* lost the link race */
       :: else -> mirror[s] = FROZEN; link[s] = p; owner[p] = ATTACHED; pc = 2
       fi }
  :: atomic { pc == 2 -> pamt[p] = EPT; owner[p] = TDX_OWNED; pc = 3 }    /* TDH.MEM.SEPT.ADD */
  :: atomic { pc == 3 -> mirror[s] = PRESENT; p = NONE; vrun--; pc = 4 }  /* PUBLISH */
  od
}

active [W] proctype walker() {
  byte pc = 0;
  byte w = _pid - V;
  byte s = (_pid - V) % N;
  byte p = NONE;
end:
  do
  :: atomic { pc == 0 ->                         /* READ: rcu_read_lock + read the mirror entry */
       rd[w] = NEW;
       if
       :: mirror[s] == PRESENT -> p = link[s]
       :: else -> skip
       fi;
       pc = 1 }
  :: atomic { pc == 1 ->                         /* ACCESS + rcu_read_unlock */
       if
       :: p != NONE -> assert(!spfree[p])       /* rcu-use-after-free */
       :: else -> skip
       fi;
       if
       :: rd[w] == OLD -> nold--
       :: else -> skip
       fi;
       rd[w] = OUT; p = NONE; pc = 2 }
  od
}

active proctype teardown() {
  byte pc = T_WAIT;
  byte i = 0;
  byte p = NONE;
end:
  do
  :: atomic { pc == T_WAIT && vrun == 0 ->       /* kvm_destroy_vm: HKID released first */
#ifndef BUG_RECLAIM_HKID_ASSIGNED
       hkid = 0;
#endif
       pc = T_ZAP }
  :: atomic { pc == T_ZAP ->
       if
       :: mirror[i] != PRESENT ->
            i++;
            if
            :: i < N -> pc = T_ZAP
            :: else -> pc = AFTER_LOOP
            fi
       :: else -> p = link[i]; mirror[i] = EMPTY; link[i] = NONE; pc = AFTER_ZAP
       fi }
  :: atomic { pc == T_FREE_EARLY -> free_ext(p); pc = T_RECLAIM }       /* BUG_FREE_BEFORE_RECLAIM */
  :: atomic { pc == T_RECLAIM ->                 /* TDH.PHYMEM.PAGE.RECLAIM, may fail by injection */
       if
       :: k = 0
       :: nfaults < MAXF -> k = 1
       fi;
       assert(!hkid);                            /* seamcall-unexpected-error */
       if
       :: k == 1 ->
            nfaults++;
#ifdef BUG_FREE_AFTER_FAILED_RECLAIM
            pc = AFTER_RECLAIM
#else
            owner[p] = LEAKED; pc = T_CALL_RCU
#endif
       :: else -> pamt[p] = NDA; owner[p] = RECLAIMED; pc = AFTER_RECLAIM
       fi;
       k = 0 }
  :: atomic { pc == T_FREE -> free_ext(p); pc = T_CALL_RCU }           /* tdx-free */
  :: atomic { pc == T_CALL_RCU ->
#ifdef BUG_NO_GRACE_PERIOD
       free_sp(p);
#else
       cbq[cbn] = p; cbage[cbn] = 0; cbn++;
#endif
       p = NONE; i++;
       if
       :: i < N -> pc = T_ZAP
       :: else -> pc = AFTER_LOOP
       fi }
  :: atomic { pc == T_RELEASE -> hkid = 0; pc = T_BARRIER }             /* BUG_RECLAIM_HKID_ASSIGNED */
  :: atomic { pc == T_BARRIER && cbn == 0 ->     /* rcu_barrier, then leak-at-destroy */
       k = 0;
       do
       :: k < N -> assert(owner[k] == FREE || owner[k] == FREED || owner[k] == LEAKED); k++
       :: else -> break
       od;
       k = 0; pc = T_DONE }
  od
}

active proctype rcu() {
end:
  do
  :: atomic { cbn > 0 && (cbage[0] >= 2 || nold == 0) ->
       if
       :: cbage[0] >= 2 ->                       /* run the head callback */
            q = cbq[0];
            k = 0;
            do
            :: k + 1 < cbn -> cbq[k] = cbq[k + 1]; cbage[k] = cbage[k + 1]; k++
            :: else -> break
            od;
            cbn--; cbq[cbn] = NONE; cbage[cbn] = 0;
            free_sp(q);
            q = 0
       :: else ->                                /* a grace period ends */
            k = 0;
            do
            :: k < W ->
                 if
                 :: rd[k] == NEW -> rd[k] = OLD; nold++
                 :: else -> skip
                 fi;
                 k++
            :: else -> break
            od;
            k = 0;
            do
            :: k < cbn ->
                 if
                 :: cbage[k] < 2 -> cbage[k]++
                 :: else -> skip
                 fi;
                 k++
            :: else -> break
            od
       fi;
       k = 0 }
  od
}
