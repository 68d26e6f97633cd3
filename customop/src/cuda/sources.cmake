# Source lists of the CUDA part, shared by src/cuda/CMakeLists.txt (the product build) and the
# standalone ThreadSanitizer build of the emulated tests (tests/cuda/CMakeLists.txt).
set(INFLLMV2_CUDA_DIR "${CMAKE_CURRENT_LIST_DIR}")
# Host emulation (emu/) and the kernels compiled by the host compiler against it.
set(INFLLMV2_CUDA_EMU_SOURCES
  "${INFLLMV2_CUDA_DIR}/emu/emulator.cc"
  "${INFLLMV2_CUDA_DIR}/emu/kernels_emu.cc")
# The same kernels compiled by nvcc: the driver and stages 1-3 per dtype, and the attention kernels
# one file per (dtype, head size) (instantiations/), so they compile in parallel.
set(INFLLMV2_CUDA_ATTENTION_SOURCES)
foreach(_t f16 bf16)
  foreach(_d 64 96 128 256)
    list(APPEND INFLLMV2_CUDA_ATTENTION_SOURCES "${INFLLMV2_CUDA_DIR}/instantiations/attention_${_t}_hd${_d}.cu")
  endforeach()
endforeach()
set(INFLLMV2_CUDA_DEVICE_SOURCES
  "${INFLLMV2_CUDA_DIR}/attention_cuda_f16.cu"
  "${INFLLMV2_CUDA_DIR}/attention_cuda_bf16.cu"
  ${INFLLMV2_CUDA_ATTENTION_SOURCES})
