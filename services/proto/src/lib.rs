//! The Setpoint gRPC API (`setpoint.v1`), generated at build time from `protos/`, with
//! the codec its stubs use.

pub mod codec;

pub mod v1 {
    tonic::include_proto!("setpoint.v1");

    /// Encoded `FileDescriptorSet` of the API, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("setpoint_descriptor");
}
