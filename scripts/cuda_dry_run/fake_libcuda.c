/*
 * A stand-in for NVIDIA's driver library (libcuda.so.1) on a machine without a GPU, for
 * scripts/cuda_dry_run.sh: birads built with `--features cuda` runs its CUDA paths against it,
 * and every kernel those paths launch goes through NVIDIA's real NVRTC (from pip), as on a GPU.
 *
 * What it does: device memory is host memory (so uploads and downloads round-trip), streams and
 * events are tokens, every PTX module cubecl loads is written to $FAKE_CUDA_PTX_DIR (the script
 * assembles each with ptxas for the architecture), and a kernel launch checks its grid, block
 * and shared memory against the device's limits and then does nothing. So the values a run
 * computes are meaningless; what it shows is that NVRTC compiles every kernel of a path for the
 * GPU named below, that ptxas assembles it, and that every launch fits the device.
 *
 * The device: compute capability $FAKE_CUDA_SM (default 90, an H100/H200), 132 multiprocessors,
 * 1,024 threads and 227 KiB of opt-in shared memory per block, 80 GB (allocations are
 * reserved lazily, so untouched memory costs nothing here).
 *
 * Written against NVIDIA's own cuda.h (from pip's nvidia-cuda-runtime wheel), so each entry
 * point has the driver's signature; the header's macros give them the exported names
 * (cuMemAlloc -> cuMemAlloc_v2 ...). Only what cubecl-cuda and cudarc call is here: a call to
 * anything else fails to load its symbol, loudly, in cudarc.
 */
#define _GNU_SOURCE
#include <cuda.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define TOTAL_MEMORY (80ull << 30)
#define MAX_THREADS 1024
#define MAX_SHARED_OPTIN (227 * 1024)
#define MAX_SHARED_DEFAULT (48 * 1024)

static atomic_long modules, cubins, launches, bad_launches, bad_maps, allocated;

static void report(void) {
  fprintf(stderr,
          "fake libcuda: %ld modules loaded (%ld cubins), %ld launches (%ld refused), %ld "
          "tensor maps refused, %ld allocations\n",
          modules, cubins, launches, bad_launches, bad_maps, allocated);
}

static int sm(void) {
  const char *s = getenv("FAKE_CUDA_SM");
  return s ? atoi(s) : 90;
}

CUresult cuInit(unsigned int flags) {
  (void)flags;
  static atomic_int once;
  if (atomic_fetch_add(&once, 1) == 0) atexit(report);
  return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int *version) {
  *version = 13000;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int *count) {
  *count = 1;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice *device, int ordinal) {
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *device = 0;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
  (void)dev;
  snprintf(name, len, "fake CUDA device (sm_%d, no GPU)", sm());
  return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem(size_t *bytes, CUdevice dev) {
  (void)dev;
  *bytes = TOTAL_MEMORY;
  return CUDA_SUCCESS;
}

CUresult cuMemGetInfo(size_t *free, size_t *total) {
  *free = TOTAL_MEMORY;
  *total = TOTAL_MEMORY;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int *value, CUdevice_attribute attribute, CUdevice dev) {
  (void)dev;
  switch (attribute) {
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = sm() / 10; break;
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = sm() % 10; break;
  case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *value = 32; break;
  case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = MAX_THREADS; break;
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *value = 1024; break;
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *value = 1024; break;
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *value = 64; break;
  case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *value = 2147483647; break;
  case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *value = 65535; break;
  case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *value = 65535; break;
  case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = 132; break;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *value = MAX_SHARED_DEFAULT; break;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *value = MAX_SHARED_OPTIN; break;
  case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: *value = 65536; break;
  case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *value = 2048; break;
  default: *value = 0;
  }
  return CUDA_SUCCESS;
}

/* Contexts, streams and events are tokens; nothing runs asynchronously, so waiting for one of
 * them, or making one current, has nothing to do. */
#define NOTHING_TO_DO(name, type)                                                               \
  CUresult name(type token) {                                                                   \
    (void)token;                                                                                \
    return CUDA_SUCCESS;                                                                        \
  }
NOTHING_TO_DO(cuCtxSetCurrent, CUcontext)
NOTHING_TO_DO(cuStreamSynchronize, CUstream)
NOTHING_TO_DO(cuStreamQuery, CUstream)
NOTHING_TO_DO(cuEventSynchronize, CUevent)
NOTHING_TO_DO(cuEventQuery, CUevent)

static int token;

CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
  (void)dev;
  *ctx = (CUcontext)&token;
  return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext *ctx) {
  *ctx = (CUcontext)&token;
  return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize(void) { return CUDA_SUCCESS; }

CUresult cuStreamCreate(CUstream *stream, unsigned int flags) {
  (void)flags;
  *stream = (CUstream)malloc(1);
  return CUDA_SUCCESS;
}

CUresult cuStreamCreateWithPriority(CUstream *stream, unsigned int flags, int priority) {
  (void)priority;
  return cuStreamCreate(stream, flags);
}

CUresult cuStreamDestroy(CUstream stream) {
  free(stream);
  return CUDA_SUCCESS;
}

CUresult cuStreamWaitEvent(CUstream stream, CUevent event, unsigned int flags) {
  (void)stream, (void)event, (void)flags;
  return CUDA_SUCCESS;
}

/* An event keeps the time it was recorded at, so elapsed times are the host's. */
CUresult cuEventCreate(CUevent *event, unsigned int flags) {
  (void)flags;
  *event = (CUevent)calloc(1, sizeof(struct timespec));
  return *event ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuEventRecord(CUevent event, CUstream stream) {
  (void)stream;
  clock_gettime(CLOCK_MONOTONIC, (struct timespec *)event);
  return CUDA_SUCCESS;
}

CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent end) {
  struct timespec *a = (struct timespec *)start, *b = (struct timespec *)end;
  *ms = (float)((b->tv_sec - a->tv_sec) * 1e3 + (b->tv_nsec - a->tv_nsec) / 1e6);
  return CUDA_SUCCESS;
}

CUresult cuEventDestroy(CUevent event) {
  free(event);
  return CUDA_SUCCESS;
}

/* Device memory: anonymous mappings reserved lazily, the size kept in the page before the
 * address handed out (which is page-aligned, as the driver's are at least 256-byte aligned). */
#define HEADER 4096

CUresult cuMemAlloc(CUdeviceptr *ptr, size_t bytes) {
  size_t total = HEADER + ((bytes + HEADER - 1) / HEADER) * HEADER;
  char *base = mmap(NULL, total, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  *(size_t *)base = total;
  *ptr = (CUdeviceptr)(base + HEADER);
  atomic_fetch_add(&allocated, 1);
  return CUDA_SUCCESS;
}

CUresult cuMemFree(CUdeviceptr ptr) {
  char *base = (char *)ptr - HEADER;
  munmap(base, *(size_t *)base);
  return CUDA_SUCCESS;
}

CUresult cuMemAllocAsync(CUdeviceptr *ptr, size_t bytes, CUstream stream) {
  (void)stream;
  return cuMemAlloc(ptr, bytes);
}

CUresult cuMemFreeAsync(CUdeviceptr ptr, CUstream stream) {
  (void)stream;
  return cuMemFree(ptr);
}

CUresult cuMemAllocHost(void **ptr, size_t bytes) {
  *ptr = malloc(bytes ? bytes : 1);
  return *ptr ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult cuMemFreeHost(void *ptr) {
  free(ptr);
  return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void *src, size_t bytes, CUstream stream) {
  (void)stream;
  memcpy((void *)dst, src, bytes);
  return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoHAsync(void *dst, CUdeviceptr src, size_t bytes, CUstream stream) {
  (void)stream;
  memcpy(dst, (const void *)src, bytes);
  return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream stream) {
  (void)stream;
  memmove((void *)dst, (const void *)src, bytes);
  return CUDA_SUCCESS;
}

static char *address(CUmemorytype type, const void *host, CUdeviceptr device) {
  return type == CU_MEMORYTYPE_HOST ? (char *)host : (char *)device;
}

CUresult cuMemcpy2DAsync(const CUDA_MEMCPY2D *copy, CUstream stream) {
  (void)stream;
  if (copy->srcMemoryType == CU_MEMORYTYPE_ARRAY || copy->dstMemoryType == CU_MEMORYTYPE_ARRAY)
    return CUDA_ERROR_NOT_SUPPORTED;
  const char *src = address(copy->srcMemoryType, copy->srcHost, copy->srcDevice) +
                    copy->srcY * copy->srcPitch + copy->srcXInBytes;
  char *dst = address(copy->dstMemoryType, copy->dstHost, copy->dstDevice) +
              copy->dstY * copy->dstPitch + copy->dstXInBytes;
  for (size_t row = 0; row < copy->Height; row++)
    memcpy(dst + row * copy->dstPitch, src + row * copy->srcPitch, copy->WidthInBytes);
  return CUDA_SUCCESS;
}

/* Modules: PTX (from NVRTC) or a cubin (ELF, assembled ahead of time for the GPU:
 * cuda_dry_run/assemble_kernels.py), which the driver takes alike. A PTX image is written out for
 * ptxas; a cubin must be for this device's architecture, as on the device. A function is its
 * module's token, and it must be an entry point of the module cubecl loaded last (cubecl asks
 * for the function right after loading its module; the image is not kept beyond that). */
#define EM_CUDA 190
static char *last_image;
static size_t last_size;
static long last_module;

/* An ELF image's length (its section headers come last in ptxas' cubins); 0 if not a cubin. */
static size_t cubin_size(const unsigned char *image) {
  if (memcmp(image, "\177ELF", 4) != 0 || image[4] != 2) return 0;
  unsigned short machine, entry_size, entries;
  unsigned long long section_headers;
  memcpy(&machine, image + 18, 2);
  memcpy(&section_headers, image + 40, 8);
  memcpy(&entry_size, image + 58, 2);
  memcpy(&entries, image + 60, 2);
  return machine == EM_CUDA ? section_headers + (size_t)entry_size * entries : 0;
}

CUresult cuModuleLoadData(CUmodule *module, const void *image) {
  long n = atomic_fetch_add(&modules, 1);
  size_t size = cubin_size(image);
  if (size) {
    unsigned flags;
    memcpy(&flags, (const char *)image + 48, 4);
    if ((int)((flags >> 8) & 0xff) != sm()) {
      fprintf(stderr, "fake libcuda: refused: a cubin for sm_%u on sm_%d\n", (flags >> 8) & 0xff,
              sm());
      return CUDA_ERROR_NO_BINARY_FOR_GPU;
    }
    atomic_fetch_add(&cubins, 1);
  } else if (memcmp(image, "\177ELF", 4) == 0) {
    fprintf(stderr, "fake libcuda: refused: an ELF image that is not a CUDA cubin\n");
    return CUDA_ERROR_INVALID_IMAGE;
  } else {
    size = strlen(image) + 1;
    const char *dir = getenv("FAKE_CUDA_PTX_DIR");
    if (dir) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%06ld.ptx", dir, n);
      FILE *f = fopen(path, "w");
      if (!f) return CUDA_ERROR_INVALID_IMAGE;
      fputs((const char *)image, f);
      fclose(f);
    }
  }
  free(last_image);
  last_image = malloc(size);
  memcpy(last_image, image, size);
  last_size = size, last_module = n + 1;
  *module = (CUmodule)(n + 1);
  return CUDA_SUCCESS;
}

/* Is NAME an entry point of the image: `.entry NAME(` in PTX, the symbol's name in a cubin? */
static int has_entry(const char *name) {
  size_t len = strlen(name);
  if (cubin_size((const unsigned char *)last_image))
    return memmem(last_image, last_size, name, len + 1) != NULL;
  for (const char *p = last_image; (p = strstr(p, ".entry ")) != NULL; p += 7)
    if (strncmp(p + 7, name, len) == 0 && (p[7 + len] == '(' || p[7 + len] == ' ')) return 1;
  return 0;
}

CUresult cuModuleGetFunction(CUfunction *function, CUmodule module, const char *name) {
  if ((long)module == last_module && !has_entry(name)) {
    fprintf(stderr, "fake libcuda: refused: no entry point %s in module %ld\n", name,
            (long)module);
    return CUDA_ERROR_NOT_FOUND;
  }
  *function = (CUfunction)module;
  return CUDA_SUCCESS;
}

/* Dynamic shared memory above 48 KiB must be asked for per function first, as on the device. */
#define MAX_FUNCTIONS (1 << 20)
static _Atomic int dynamic_shared[MAX_FUNCTIONS];

static unsigned allowed_shared(CUfunction function) {
  unsigned long i = (unsigned long)function;
  int asked = i < MAX_FUNCTIONS ? dynamic_shared[i] : 0;
  return asked > MAX_SHARED_DEFAULT ? (unsigned)asked : MAX_SHARED_DEFAULT;
}

CUresult cuFuncSetAttribute(CUfunction function, CUfunction_attribute attribute, int value) {
  if (attribute != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) return CUDA_SUCCESS;
  if (value > MAX_SHARED_OPTIN) {
    fprintf(stderr, "fake libcuda: %d bytes of dynamic shared memory asked, at most %d\n", value,
            MAX_SHARED_OPTIN);
    return CUDA_ERROR_INVALID_VALUE;
  }
  unsigned long i = (unsigned long)function;
  if (i < MAX_FUNCTIONS) dynamic_shared[i] = value;
  return CUDA_SUCCESS;
}

CUresult cuFuncGetAttribute(int *value, CUfunction_attribute attribute, CUfunction function) {
  (void)function;
  *value = attribute == CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK ? MAX_THREADS : 0;
  return CUDA_SUCCESS;
}

/* A launch is checked against the device's limits, then nothing runs. */
static CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                       unsigned by, unsigned bz, unsigned shared) {
  atomic_fetch_add(&launches, 1);
  const char *why = NULL;
  if (!gx || !gy || !gz || !bx || !by || !bz) why = "an empty grid or block";
  else if ((unsigned long)bx * by * bz > MAX_THREADS || bz > 64) why = "too many threads in a block";
  else if (gy > 65535 || gz > 65535) why = "a grid too large in y or z";
  else if (shared > MAX_SHARED_OPTIN) why = "too much shared memory";
  else if (shared > allowed_shared(f)) why = "more dynamic shared memory than the function asked for";
  if (!why) return CUDA_SUCCESS;
  atomic_fetch_add(&bad_launches, 1);
  fprintf(stderr, "fake libcuda: launch refused: %s: grid %u×%u×%u, block %u×%u×%u, %u B shared\n",
          why, gx, gy, gz, bx, by, bz, shared);
  return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shared, CUstream stream,
                        void **params, void **extra) {
  (void)stream, (void)params, (void)extra;
  return launch(f, gx, gy, gz, bx, by, bz, shared);
}

CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra) {
  (void)params, (void)extra;
  return launch(f, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY, c->blockDimZ,
                c->sharedMemBytes);
}

/* Tensor maps (TMA, sm_90): checked against the rules cuda.h documents for them (what a
 * device driver refuses), then an opaque 128-byte value of zeros. */


static CUresult refuse_map(const char *kind, const char *why) {
  atomic_fetch_add(&bad_maps, 1);
  fprintf(stderr, "fake libcuda: %s tensor map refused: %s\n", kind, why);
  return CUDA_ERROR_INVALID_VALUE;
}

static unsigned element_bytes(CUtensorMapDataType type) {
  static const unsigned bytes[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
  return (unsigned)type < sizeof bytes / sizeof *bytes ? bytes[type] : 0; /* 0: packed */
}

/* The rules every tensor map shares; NULL when they hold. */
static const char *map_rules(CUtensorMap *map, cuuint32_t rank, cuuint32_t min_rank,
                             void *address, const cuuint64_t *dims, const cuuint64_t *strides,
                             const cuuint32_t *element_strides, CUtensorMapInterleave interleave) {
  if ((unsigned long)map % 64) return "the map is not 64-byte aligned";
  if (rank < min_rank || rank > 5) return "a rank out of range";
  if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE && rank < 3) return "interleaved below rank 3";
  unsigned align = interleave == CU_TENSOR_MAP_INTERLEAVE_32B ? 32 : 16;
  if ((unsigned long)address % align) return "a global address not 16-byte aligned";
  for (cuuint32_t i = 0; i < rank; i++) {
    if (dims[i] == 0 || dims[i] > (1ull << 31)) return "a dimension of 0 or above 2^31";
    if (element_strides[i] == 0 || element_strides[i] > 8) return "an element stride not in 1..8";
  }
  for (cuuint32_t i = 0; i + 1 < rank; i++)
    if (strides[i] % align || strides[i] >= (1ull << 40)) return "a stride not a multiple of 16 bytes";
  return NULL;
}

static unsigned swizzle_span(CUtensorMapSwizzle swizzle) {
  switch (swizzle) {
  case CU_TENSOR_MAP_SWIZZLE_NONE: return 0;
  case CU_TENSOR_MAP_SWIZZLE_32B: return 32;
  case CU_TENSOR_MAP_SWIZZLE_64B: return 64;
  default: return 128;
  }
}

/* The innermost extent copied (a box's first dimension, an im2col pixel's channels), in
 * elements: a multiple of 16 bytes, within the swizzle's span. */
static const char *inner_rules(cuuint32_t elements, CUtensorMapDataType type,
                               CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle) {
  unsigned inner = elements * element_bytes(type);
  if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE || !element_bytes(type)) return NULL;
  if (inner % 16) return "an inner extent not a multiple of 16 bytes";
  if (swizzle_span(swizzle) && inner > swizzle_span(swizzle)) return "an inner extent wider than its swizzle";
  return NULL;
}

CUresult cuTensorMapEncodeTiled(CUtensorMap *map, CUtensorMapDataType type, cuuint32_t rank,
                                void *address, const cuuint64_t *dims, const cuuint64_t *strides,
                                const cuuint32_t *box, const cuuint32_t *element_strides,
                                CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                CUtensorMapL2promotion promotion, CUtensorMapFloatOOBfill fill) {
  (void)promotion, (void)fill;
  const char *why = map_rules(map, rank, 1, address, dims, strides, element_strides, interleave);
  if (why) return refuse_map("tiled", why);
  for (cuuint32_t i = 0; i < rank; i++)
    if (box[i] == 0 || box[i] > 256) {
      char why[160];
      snprintf(why, sizeof why, "box dimension %u of %u is %u, not in 1..256 (type %d)", i, rank,
               box[i], (int)type);
      return refuse_map("tiled", why);
    }
  why = inner_rules(box[0], type, interleave, swizzle);
  if (why) return refuse_map("tiled", why);
  memset(map, 0, sizeof *map);
  return CUDA_SUCCESS;
}

CUresult cuTensorMapEncodeIm2col(CUtensorMap *map, CUtensorMapDataType type, cuuint32_t rank,
                                 void *address, const cuuint64_t *dims,
                                 const cuuint64_t *strides, const int *lower, const int *upper,
                                 cuuint32_t channels, cuuint32_t pixels,
                                 const cuuint32_t *element_strides,
                                 CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                 CUtensorMapL2promotion promotion, CUtensorMapFloatOOBfill fill) {
  (void)lower, (void)upper, (void)promotion, (void)fill;
  const char *why = map_rules(map, rank, 3, address, dims, strides, element_strides, interleave);
  if (why) return refuse_map("im2col", why);
  if (channels == 0 || channels > 256) return refuse_map("im2col", "channels per pixel not in 1..256");
  if (pixels == 0 || pixels > 1024) return refuse_map("im2col", "pixels per column not in 1..1024");
  why = inner_rules(channels, type, interleave, swizzle);
  if (why) return refuse_map("im2col", why);
  memset(map, 0, sizeof *map);
  return CUDA_SUCCESS;
}

CUresult cuGetErrorString(CUresult error, const char **text) {
  (void)error;
  *text = "an error of the fake driver (scripts/cuda_dry_run)";
  return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult error, const char **text) {
  (void)error;
  *text = "CUDA_ERROR_FAKE_DRIVER";
  return CUDA_SUCCESS;
}

/* NVRTC 13 looks for the driver itself (for its compilation cache): it opens libcuda.so.1,
 * calls cuInit and asks for a private table of the driver's, which a stand-in does not have.
 * Saying so makes NVRTC go on without it (without this entry point, NVRTC 13.5 crashes). */
CUresult cuGetExportTable(const void **table, const CUuuid *id) {
  (void)id;
  *table = NULL;
  return CUDA_ERROR_NOT_SUPPORTED;
}
