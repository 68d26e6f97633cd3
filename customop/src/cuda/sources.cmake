# Source lists of the CUDA part, shared by src/cuda/CMakeLists.txt (the product build) and the
# standalone ThreadSanitizer build of the emulated tests (tests/cuda/CMakeLists.txt).
set(INFLLMV2_CUDA_DIR "${CMAKE_CURRENT_LIST_DIR}")
# Host emulation (emu/) and the kernels compiled by the host compiler against it.
set(INFLLMV2_CUDA_EMU_SOURCES
  "${INFLLMV2_CUDA_DIR}/emu/emulator.cc"
  "${INFLLMV2_CUDA_DIR}/emu/kernels_emu.cc")
# The same kernels compiled by nvcc (one .cu per stage; dtype instantiations in their own files).
set(INFLLMV2_CUDA_DEVICE_SOURCES
  "${INFLLMV2_CUDA_DIR}/attention_cuda_f16.cu"
  "${INFLLMV2_CUDA_DIR}/attention_cuda_bf16.cu")
