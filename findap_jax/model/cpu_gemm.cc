// fp32 GEMM for XLA:CPU through the BLAS that scipy ships (an XLA FFI handler).
//
// Row-major C[m, n] = op(A) op(B), op a transpose where the attribute says so. Column-major
// BLAS computes C^T = op(B)^T op(A)^T on the same memory, so the operands swap places.
// The product is cut into as many row (or column) blocks as XLA's intra-op pool has
// threads; each block runs single-threaded on a pool thread or on this one. Letting BLAS
// thread by itself makes its threads and XLA's take turns spinning on the same cores
// (see cpu_gemm.py). Built on first use by cpu_gemm.py; the BLAS entry points are handed
// in by `findap_cpu_gemm_init`.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <dlfcn.h>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Fortran BLAS sgemm (LP64), as scipy.linalg.cython_blas exports it.
using Sgemm = void (*)(const char*, const char*, const int*, const int*, const int*,
                       const float*, const float*, const int*, const float*, const int*,
                       const float*, float*, const int*);
// OpenBLAS's openblas_set_num_threads_local (>= 0.3.27). Per thread in OpenMP builds; the
// pthreads builds that scipy's wheels ship apply it to the whole process.
using SetThreadsLocal = int (*)(int);

Sgemm g_sgemm = nullptr;
SetThreadsLocal g_set_threads_local = nullptr;

struct Gemm {
  const float* a;
  const float* b;
  float* c;
  int m, n, k, lda, ldb;
  bool trans_a, trans_b, by_rows;
  int block;  // rows (by_rows) or columns of C per part

  int parts() const { return ((by_rows ? m : n) + block - 1) / block; }

  void Run(int part) const {
    const int lo = part * block;
    const int hi = std::min(by_rows ? m : n, lo + block);
    const int len = hi - lo, ldc = n;
    const float one = 1.f, zero = 0.f;
    const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    if (g_set_threads_local) g_set_threads_local(1);
    if (by_rows) {  // rows lo..hi of op(A) and of C
      const float* ap = trans_a ? a + lo : a + int64_t{lo} * lda;
      g_sgemm(&tb, &ta, &n, &len, &k, &one, b, &ldb, ap, &lda, &zero, c + int64_t{lo} * ldc, &ldc);
    } else {        // columns lo..hi of op(B) and of C
      const float* bp = trans_b ? b + int64_t{lo} * ldb : b + lo;
      g_sgemm(&tb, &ta, &len, &m, &k, &one, bp, &ldb, a, &lda, &zero, c + lo, &ldc);
    }
  }
};

// Parts are claimed once each, by a pool thread or by the calling thread, which works
// through all of them itself if the pool is busy: a full pool never deadlocks the call.
struct Claims {
  explicit Claims(int n) : taken(n) {}
  std::vector<std::atomic<bool>> taken;
  std::atomic<int> done{0};
  std::mutex mu;
  std::condition_variable all_done;
};

ffi::Error GemmImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                    ffi::ResultBuffer<ffi::F32> c, bool trans_a, bool trans_b) {
  if (g_sgemm == nullptr) return ffi::Error::Internal("findap_cpu_gemm: BLAS not initialised");
  auto ad = a.dimensions();
  auto bd = b.dimensions();
  if (ad.size() != 2 || bd.size() != 2)
    return ffi::Error::InvalidArgument("findap_cpu_gemm: operands must be 2-D");
  auto gemm = std::make_shared<Gemm>();
  gemm->a = a.typed_data();
  gemm->b = b.typed_data();
  gemm->c = c->typed_data();
  gemm->m = static_cast<int>(trans_a ? ad[1] : ad[0]);
  gemm->k = static_cast<int>(trans_a ? ad[0] : ad[1]);
  gemm->n = static_cast<int>(trans_b ? bd[0] : bd[1]);
  if ((trans_b ? bd[1] : bd[0]) != gemm->k)
    return ffi::Error::InvalidArgument("findap_cpu_gemm: contracting dimensions differ");
  gemm->lda = static_cast<int>(ad[1]);
  gemm->ldb = static_cast<int>(bd[1]);
  gemm->trans_a = trans_a;
  gemm->trans_b = trans_b;
  gemm->by_rows = gemm->m >= gemm->n;
  const int64_t threads = g_set_threads_local ? std::max<int64_t>(1, pool.num_threads()) : 1;
  const int len = gemm->by_rows ? gemm->m : gemm->n;
  gemm->block = std::max<int>(1, static_cast<int>((len + threads - 1) / threads));
  const int parts = gemm->parts();
  if (parts <= 1) {
    gemm->Run(0);
    return ffi::Error::Success();
  }
  auto claims = std::make_shared<Claims>(parts);
  auto work = [gemm, claims, parts](int part) {
    if (claims->taken[part].exchange(true)) return;
    gemm->Run(part);
    if (claims->done.fetch_add(1) + 1 == parts) {
      std::lock_guard<std::mutex> lock(claims->mu);
      claims->all_done.notify_all();
    }
  };
  for (int part = 1; part < parts; ++part) pool.Schedule([work, part] { work(part); });
  for (int part = 0; part < parts; ++part) work(part);
  std::unique_lock<std::mutex> lock(claims->mu);
  claims->all_done.wait(lock, [&] { return claims->done.load() == parts; });
  return ffi::Error::Success();
}

}  // namespace

// Takes scipy's sgemm; returns whether the library behind it can set its thread count
// (looked up in that library itself: a process may hold several OpenBLAS copies, e.g.
// numpy's and scipy's).
extern "C" bool findap_cpu_gemm_init(void* sgemm) {
  g_sgemm = reinterpret_cast<Sgemm>(sgemm);
  g_set_threads_local = nullptr;
  Dl_info info;
  if (dladdr(sgemm, &info) != 0 && info.dli_fname != nullptr) {
    if (void* lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD)) {
      g_set_threads_local =
          reinterpret_cast<SetThreadsLocal>(dlsym(lib, "openblas_set_num_threads_local"));
      dlclose(lib);  // still loaded by scipy: RTLD_NOLOAD took a reference only
    }
  }
  return g_set_threads_local != nullptr;
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FindapCpuGemm, GemmImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("trans_a")
                                  .Attr<bool>("trans_b"));
