import NIOCore

/// The entry point for a fuzzer (libFuzzer's `LLVMFuzzerTestOneInput` calls `run(data:)`): every parser of
/// this module gets the input, as a connection would deliver it. It must never trap, whatever the bytes;
/// a trap is a bug in the code it reaches, not in the input.
public enum ISCSIFuzzing {
    /// CHAP secrets for the login machine, so the authentication paths are reached too.
    static let chap = ISCSIChapConfiguration(
        initiatorSecrets: ["fuzz": "fuzz-secret-0123"], target: (name: "target", secret: "target-secret-45"))
    static let challenge = [UInt8](repeating: 0x5A, count: ISCSIChap.challengeLength)

    /// Feeds `data` to the PDU decoder; every PDU it yields goes through the text, CDB and EXTENDED COPY
    /// parsers, the login state machine and the command window. The first byte picks the decoder's
    /// settings (digests, declared segment size). Returns the number of PDUs decoded.
    @discardableResult
    public static func run(data: [UInt8]) -> Int {
        guard let settings = data.first else { return 0 }
        var decoder = ISCSIPDUDecoder()
        decoder.headerDigest = settings & 0x01 != 0
        decoder.dataDigest = settings & 0x02 != 0
        decoder.maximumDataSegmentLength =
            settings & 0x04 != 0 ? ISCSILimits.targetMaxRecvDataSegmentLength : ISCSILimits.defaultDataSegmentLength
        var login = ISCSILoginStateMachine(tsih: 1, chap: chap, chapIdentifier: settings, chapChallenge: challenge)
        var window = ISCSICommandWindow(expCmdSN: 0, statSN: 0)
        var buffer = ByteBuffer(bytes: data.dropFirst())
        var count = 0
        while true {
            let pdu: ISCSIPDU?
            do {
                pdu = try decoder.decode(&buffer)
            } catch .dataDigestMismatch {
                continue
            } catch {
                break
            }
            guard let pdu else { break }
            count += 1
            _ = try? ISCSITextParameters.parse(pdu.data)
            _ = try? SCSICommand.parse((32..<48).map { pdu.byte($0) })
            _ = try? SCSIExtendedCopyList.parse(pdu.data)
            _ = login.receive(pdu) { target, name in target.utf8.count % 2 == 0 || name != nil }
            if window.admit(cmdSN: pdu.commandSequenceNumber, immediate: pdu.isImmediate) == .accept, !pdu.isImmediate {
                window.finish()
            }
            _ = pdu.encoded(headerDigest: decoder.headerDigest, dataDigest: decoder.dataDigest)
        }
        return count
    }
}
