/*
 * Does the stand-in driver (fake_libcuda.c) refuse what a device refuses, and keep what a run
 * needs? scripts/cuda_dry_run.sh runs this before any step: a dry run is worth only as much as
 * these checks. Exit status: the number of failed checks.
 */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failed;

static void expect(int ok, const char *what) {
  printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  failed += !ok;
}

static CUresult launch(CUfunction f, unsigned gy, unsigned threads, unsigned shared) {
  return cuLaunchKernel(f, 1, gy, 1, threads, 1, 1, shared, NULL, NULL, NULL);
}

int main(void) {
  expect(cuInit(0) == CUDA_SUCCESS, "cuInit");
  int major = 0;
  cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0);
  expect(major == 9, "compute capability 9.x by default");

  /* Memory round-trips, including a pitched 2-D copy. */
  CUdeviceptr d;
  float in[64], out[64];
  for (int i = 0; i < 64; i++) in[i] = (float)i;
  expect(cuMemAlloc(&d, sizeof in) == CUDA_SUCCESS, "allocation");
  cuMemcpyHtoDAsync(d, in, sizeof in, NULL);
  memset(out, 0, sizeof out);
  cuMemcpyDtoHAsync(out, d, sizeof out, NULL);
  expect(memcmp(in, out, sizeof in) == 0, "upload then download gives the values back");
  CUDA_MEMCPY2D copy = {0};
  copy.srcMemoryType = CU_MEMORYTYPE_DEVICE, copy.srcDevice = d, copy.srcPitch = 8 * sizeof(float);
  copy.dstMemoryType = CU_MEMORYTYPE_HOST, copy.dstHost = out, copy.dstPitch = 4 * sizeof(float);
  copy.WidthInBytes = 4 * sizeof(float), copy.Height = 8;
  memset(out, 0, sizeof out);
  cuMemcpy2DAsync(&copy, NULL);
  expect(out[4] == 8.0f && out[31] == 59.0f, "a pitched copy takes each row's first values");
  cuMemFree(d);

  /* Launches against the device's limits. */
  CUmodule module;
  CUfunction f;
  expect(cuModuleLoadData(&module, ".visible .entry k(\n)\n{\n}\n") == CUDA_SUCCESS,
         "a PTX module loads");
  expect(cuModuleGetFunction(&f, module, "kk") != CUDA_SUCCESS,
         "a function the module does not have is refused");
  expect(cuModuleGetFunction(&f, module, "k") == CUDA_SUCCESS, "its entry point is found");
  expect(launch(f, 1, 1024, 0) == CUDA_SUCCESS, "1,024 threads launch");
  expect(launch(f, 1, 1025, 0) != CUDA_SUCCESS, "1,025 threads are refused");
  expect(launch(f, 65536, 32, 0) != CUDA_SUCCESS, "a grid of 65,536 in y is refused");
  expect(launch(f, 1, 32, 48 * 1024) == CUDA_SUCCESS, "48 KiB of shared memory launch");
  expect(launch(f, 1, 32, 64 * 1024) != CUDA_SUCCESS,
         "64 KiB of shared memory are refused unless asked for");
  cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 64 * 1024);
  expect(launch(f, 1, 32, 64 * 1024) == CUDA_SUCCESS, "64 KiB launch once asked for");
  expect(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 300 * 1024) !=
             CUDA_SUCCESS,
         "300 KiB cannot be asked for");

  /* Cubins: an ELF image for EM_CUDA, the architecture in bits 8-15 of its flags (as ptxas
   * 13 writes them), its length up to the end of its section headers. */
  unsigned char cubin[160] = {0x7f, 'E', 'L', 'F', 2, 1, 1};
  unsigned short machine = 190, entry_size = 64, entries = 1;
  unsigned long long section_headers = 64;
  unsigned flags = (90 << 8) | 4;
  memcpy(cubin + 18, &machine, 2), memcpy(cubin + 40, &section_headers, 8);
  memcpy(cubin + 48, &flags, 4), memcpy(cubin + 58, &entry_size, 2), memcpy(cubin + 60, &entries, 2);
  memcpy(cubin + 100, "cube_kernel", 12);
  expect(cuModuleLoadData(&module, cubin) == CUDA_SUCCESS, "a cubin for sm_90 loads");
  expect(cuModuleGetFunction(&f, module, "cube_kernel") == CUDA_SUCCESS &&
             cuModuleGetFunction(&f, module, "cube") != CUDA_SUCCESS,
         "a cubin's entry point is found by its whole name");
  flags = (80 << 8) | 4;
  memcpy(cubin + 48, &flags, 4);
  expect(cuModuleLoadData(&module, cubin) == CUDA_ERROR_NO_BINARY_FOR_GPU,
         "a cubin for sm_80 is refused on sm_90");
  machine = 62;
  memcpy(cubin + 18, &machine, 2);
  expect(cuModuleLoadData(&module, cubin) != CUDA_SUCCESS, "an x86-64 ELF image is refused");

  /* Tensor maps against cuda.h's rules. */
  static CUtensorMap map __attribute__((aligned(64)));
  void *base = aligned_alloc(128, 1 << 16);
  cuuint64_t dims[2] = {64, 64}, strides[1] = {64 * 2}, odd[1] = {100};
  cuuint32_t box[2] = {64, 8}, wide[2] = {512, 8}, ones[2] = {1, 1};
  CUresult r = cuTensorMapEncodeTiled(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, base, dims,
                                      strides, box, ones, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                                      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  expect(r == CUDA_SUCCESS, "a 64×8 bf16 box with a 128-byte swizzle is encoded");
  r = cuTensorMapEncodeTiled(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, base, dims, odd, box,
                             ones, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                             CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  expect(r != CUDA_SUCCESS, "a stride of 100 bytes is refused");
  r = cuTensorMapEncodeTiled(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, base, dims, strides,
                             wide, ones, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                             CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  expect(r != CUDA_SUCCESS, "a box of 512 is refused");
  r = cuTensorMapEncodeTiled(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (char *)base + 8, dims,
                             strides, box, ones, CU_TENSOR_MAP_INTERLEAVE_NONE,
                             CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  expect(r != CUDA_SUCCESS, "an address 8 bytes off 16 is refused");
  free(base);

  printf("%d failed\n", failed);
  return failed;
}
